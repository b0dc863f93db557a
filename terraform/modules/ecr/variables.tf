variable "name" {
  description = "Repository name."
  type        = string
}

variable "kms_key_arn" {
  type = string
}
