output "worker_role_arn" {
  value = aws_iam_role.worker.arn
}

output "backup_role_arn" {
  value = aws_iam_role.backup.arn
}
