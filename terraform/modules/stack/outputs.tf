output "cluster_name" {
  value = module.eks.cluster_name
}

output "repository_url" {
  value = module.ecr.repository_url
}

output "database_address" {
  value = module.rds.address
}

output "database_master_secret_arn" {
  value = module.rds.master_user_secret_arn
}

output "secret_arns" {
  value = module.secrets.arns
}

# k8s/overlays/<env>/infra.env, written by
#   terraform output -raw kustomize_infra_env > ../../../k8s/overlays/<env>/infra.env
output "kustomize_infra_env" {
  value = join("\n", [
    "IMAGE_REPOSITORY=${module.ecr.repository_url}",
    "KAFKA_BROKERS=${module.msk.bootstrap_brokers}",
    "CLICKHOUSE_URL=${module.clickhouse.url}",
    "VPC_CIDR=${module.network.cidr}",
    "AWS_REGION=${var.region}",
    "BACKUP_BUCKET=s3://${module.backups.bucket}",
    "WORKER_ROLE_ARN=${module.iam.worker_role_arn}",
    "BACKUP_ROLE_ARN=${module.iam.backup_role_arn}",
    "INGRESS_HOST=${var.ingress_host}",
    "CERTIFICATE_ARN=${var.certificate_arn}",
    "",
  ])
}
