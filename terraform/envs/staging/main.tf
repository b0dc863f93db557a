# Staging: the production shape at the smallest sizes that still exercise it
# (three zones, Spot workers, MSK, RDS), one NAT gateway, a single-AZ database.

module "sentinel" {
  source                      = "../../modules/stack"
  environment                 = "staging"
  region                      = var.region
  vpc_cidr                    = "10.20.0.0/16"
  single_nat_gateway          = true
  cluster_public_access_cidrs = var.cluster_public_access_cidrs

  system_nodes = { min = 2, desired = 2, max = 3 }
  worker_nodes = { min = 1, desired = 2, max = 4 }

  db_instance_class        = "db.t4g.medium"
  db_storage_gb            = 50
  db_multi_az              = false
  db_backup_retention_days = 7

  kafka_broker_instance_type = "kafka.t3.small"
  kafka_broker_storage_gb    = 100

  clickhouse_instance_type = "m6i.large"
  clickhouse_data_gb       = 100

  executor_regions = [var.region]
  ingress_host     = var.ingress_host
  certificate_arn  = var.certificate_arn
}
