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

variable "system_instance_type" {
  type    = string
  default = "m6i.large"
}

variable "system_nodes" {
  type = object({ min = number, desired = number, max = number })
}

variable "worker_instance_types" {
  type    = list(string)
  default = ["m6i.large", "m5.large", "m6a.large", "m7i.large"]
}

variable "worker_nodes" {
  type = object({ min = number, desired = number, max = number })
}
