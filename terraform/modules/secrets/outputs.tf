output "arns" {
  description = "Secret ARN by key."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}
