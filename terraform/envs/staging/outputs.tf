output "cluster_name" {
  value = module.sentinel.cluster_name
}

output "repository_url" {
  value = module.sentinel.repository_url
}

output "database_address" {
  value = module.sentinel.database_address
}

output "database_master_secret_arn" {
  value = module.sentinel.database_master_secret_arn
}

output "secret_arns" {
  value = module.sentinel.secret_arns
}

output "kustomize_infra_env" {
  value = module.sentinel.kustomize_infra_env
}
