variable "name" {
  type = string
}

variable "namespace" {
  description = "The Kubernetes namespace Sentinel runs in."
  type        = string
  default     = "sentinel"
}

variable "oidc_provider_arn" {
  type = string
}

variable "oidc_issuer" {
  description = "The cluster's OIDC issuer without https://."
  type        = string
}

variable "regions" {
  description = "Regions the executor may act in."
  type        = list(string)
}

variable "managed_tag" {
  description = "The tag an EC2 instance or ECS service must carry for Sentinel to change it."
  type        = object({ key = string, value = string })
  default     = { key = "sentinel:managed", value = "true" }
}

variable "backup_bucket_arn" {
  type = string
}

variable "kms_key_arn" {
  type = string
}
