variable "prefix" {
  description = "Path prefix of the secrets' names (e.g. sentinel/prod)."
  type        = string
}

variable "names" {
  description = "The keys of the Kubernetes Secret `sentinel` the manifests read."
  type        = list(string)
  default     = ["database-url", "slack-signing-secret", "slack-bot-token", "pagerduty-routing-key", "clickhouse-password", "qdrant-api-key"]
}

variable "kms_key_arn" {
  type = string
}
