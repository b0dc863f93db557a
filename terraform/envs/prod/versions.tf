terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
  # State in S3 with locking; the bucket and table are the team's own:
  #   terraform init -backend-config="bucket=..." -backend-config="region=..." -backend-config="dynamodb_table=..."
  backend "s3" {
    key     = "sentinel/prod/terraform.tfstate"
    encrypt = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project     = "sentinel"
      Environment = "prod"
      ManagedBy   = "terraform"
    }
  }
}
