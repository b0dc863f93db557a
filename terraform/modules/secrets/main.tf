# The secrets Sentinel reads from its environment, one Secrets Manager secret
# each, encrypted with the environment's key. Terraform creates them empty:
# their values never pass through Terraform's state. Set each once with
#   aws secretsmanager put-secret-value --secret-id NAME --secret-string VALUE
# and copy them into the `sentinel` Kubernetes Secret (terraform/README.md).

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Slack's and PagerDuty's tokens are rotated by their issuers, the ClickHouse password by Terraform; nothing here could rotate them alone
  for_each                = toset(var.names)
  name                    = "${var.prefix}/${each.value}"
  description             = "Sentinel: ${each.value}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 30
}
