variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_id" {
  description = "A private subnet (the host installs its packages through the NAT)."
  type        = string
}

variable "client_security_group_id" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "instance_type" {
  type = string
}

variable "data_gb" {
  type = number
}

variable "dns_zone" {
  description = "Private DNS zone the host is named in (clickhouse.<zone>)."
  type        = string
}

variable "password_sha256" {
  description = "SHA-256 (hex) of the `sentinel` user's password."
  type        = string
  sensitive   = true
}
