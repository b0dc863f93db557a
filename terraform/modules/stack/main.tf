# Everything one environment of Sentinel runs on, composed from the modules
# beside this one. terraform/envs/<env> call it with that environment's sizes.

locals {
  name = "sentinel-${var.environment}"
}

module "kms" {
  source = "../kms"
  name   = local.name
  region = var.region
}

module "network" {
  source             = "../network"
  name               = local.name
  region             = var.region
  cidr               = var.vpc_cidr
  single_nat_gateway = var.single_nat_gateway
  kms_key_arn        = module.kms.key_arn
}

module "eks" {
  source              = "../eks"
  name                = local.name
  kubernetes_version  = var.kubernetes_version
  subnet_ids          = module.network.private_subnet_ids
  public_access_cidrs = var.cluster_public_access_cidrs
  kms_key_arn         = module.kms.key_arn
  system_nodes        = var.system_nodes
  worker_nodes        = var.worker_nodes
}

module "rds" {
  source                   = "../rds"
  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.data_subnet_ids
  client_security_group_id = module.eks.cluster_security_group_id
  kms_key_arn              = module.kms.key_arn
  instance_class           = var.db_instance_class
  storage_gb               = var.db_storage_gb
  multi_az                 = var.db_multi_az
  backup_retention_days    = var.db_backup_retention_days
  deletion_protection      = true
}

module "msk" {
  source                   = "../msk"
  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.data_subnet_ids
  client_security_group_id = module.eks.cluster_security_group_id
  kms_key_arn              = module.kms.key_arn
  broker_instance_type     = var.kafka_broker_instance_type
  broker_storage_gb        = var.kafka_broker_storage_gb
}

resource "random_password" "clickhouse" {
  length  = 32
  special = false
}

module "clickhouse" {
  source                   = "../clickhouse"
  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_id                = module.network.private_subnet_ids[0]
  client_security_group_id = module.eks.cluster_security_group_id
  kms_key_arn              = module.kms.key_arn
  instance_type            = var.clickhouse_instance_type
  data_gb                  = var.clickhouse_data_gb
  dns_zone                 = "${var.environment}.sentinel.internal"
  password_sha256          = sha256(random_password.clickhouse.result)
}

module "ecr" {
  source      = "../ecr"
  name        = "sentinel"
  kms_key_arn = module.kms.key_arn
}

module "secrets" {
  source      = "../secrets"
  prefix      = "sentinel/${var.environment}"
  kms_key_arn = module.kms.key_arn
}

# The one secret Terraform knows the value of, because it made it.
resource "aws_secretsmanager_secret_version" "clickhouse" {
  secret_id     = module.secrets.arns["clickhouse-password"]
  secret_string = random_password.clickhouse.result
}

data "aws_caller_identity" "current" {}

module "backups" {
  source      = "../backups"
  bucket      = "${local.name}-backups-${data.aws_caller_identity.current.account_id}"
  kms_key_arn = module.kms.key_arn
}

module "iam" {
  source            = "../iam"
  name              = local.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  regions           = var.executor_regions
  backup_bucket_arn = module.backups.arn
  kms_key_arn       = module.kms.key_arn
}
