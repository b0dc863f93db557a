variable "name" {
  description = "Name prefix of every resource (e.g. sentinel-prod)."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}
