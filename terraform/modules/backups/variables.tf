variable "bucket" {
  type = string
}

variable "kms_key_arn" {
  type = string
}
