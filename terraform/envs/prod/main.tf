# Production: a NAT gateway per zone, a Multi-AZ database kept two weeks,
# brokers sized for 10k events/s, room for the workers to scale on Spot.

module "sentinel" {
  source                      = "../../modules/stack"
  environment                 = "prod"
  region                      = var.region
  vpc_cidr                    = "10.30.0.0/16"
  single_nat_gateway          = false
  cluster_public_access_cidrs = var.cluster_public_access_cidrs

  system_nodes = { min = 3, desired = 3, max = 6 }
  worker_nodes = { min = 2, desired = 3, max = 10 }

  db_instance_class        = "db.m6g.large"
  db_storage_gb            = 100
  db_multi_az              = true
  db_backup_retention_days = 14

  kafka_broker_instance_type = "kafka.m5.large"
  kafka_broker_storage_gb    = 500

  clickhouse_instance_type = "r6i.xlarge"
  clickhouse_data_gb       = 500

  executor_regions = [var.region]
  ingress_host     = var.ingress_host
  certificate_arn  = var.certificate_arn
}
