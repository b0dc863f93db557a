variable "name" {
  description = "Cluster name (e.g. sentinel-prod)."
  type        = string
}

variable "kubernetes_version" {
  type    = string
  default = "1.31"
}

variable "subnet_ids" {
  description = "Private subnets, one per zone."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "Who may reach the cluster's API from outside the VPC; empty: private endpoint only."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  type = string
}

# Sentinel's pods run on either pool. Every default type has AVX-512 BF16
# (m7i, r7i: Sapphire Rapids; m7a: Zen 4), so the embedding model runs on
# its own encoder, 11 ms p99 per text, instead of candle, 28 ms (README,
# "Semantic memory"). On older types it still works, only slower.
variable "system_instance_type" {
  type    = string
  default = "m7i.large"
}

variable "system_nodes" {
  type = object({ min = number, desired = number, max = number })
}

variable "worker_instance_types" {
  type    = list(string)
  default = ["m7i.large", "m7a.large", "r7i.large"]
}

variable "worker_nodes" {
  type = object({ min = number, desired = number, max = number })
}
