variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "cluster_public_access_cidrs" {
  description = "Who may reach the cluster's API from outside the VPC (an office or VPN range); empty: private only."
  type        = list(string)
  default     = []
}

variable "ingress_host" {
  description = "The public host name of Slack's callback."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for ingress_host."
  type        = string
}
