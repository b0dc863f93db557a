variable "environment" {
  description = "staging or prod: names every resource sentinel-<environment>."
  type        = string
}

variable "region" {
  type = string
}

variable "vpc_cidr" {
  type = string
}

variable "single_nat_gateway" {
  type = bool
}

variable "kubernetes_version" {
  type    = string
  default = "1.31"
}

variable "cluster_public_access_cidrs" {
  description = "Who may reach the cluster's API from outside the VPC (an office or VPN range); empty: private only."
  type        = list(string)
}

variable "system_nodes" {
  type = object({ min = number, desired = number, max = number })
}

variable "worker_nodes" {
  type = object({ min = number, desired = number, max = number })
}

variable "db_instance_class" {
  type = string
}

variable "db_storage_gb" {
  type = number
}

variable "db_multi_az" {
  type = bool
}

variable "db_backup_retention_days" {
  type = number
}

variable "kafka_broker_instance_type" {
  type = string
}

variable "kafka_broker_storage_gb" {
  type = number
}

variable "clickhouse_instance_type" {
  type = string
}

variable "clickhouse_data_gb" {
  type = number
}

variable "executor_regions" {
  description = "Regions whose EC2 instances and ECS services the executor may act on."
  type        = list(string)
}

variable "ingress_host" {
  description = "The public host name of Slack's callback."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for ingress_host."
  type        = string
}
