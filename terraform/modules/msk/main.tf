# MSK for the telemetry topic: one broker per zone, encrypted at rest with the
# environment's key. Sentinel's Kafka client (librdkafka without TLS support
# compiled in) speaks plaintext, so the brokers accept TLS and plaintext inside
# the VPC; only the EKS cluster's security group reaches them.

resource "aws_security_group" "this" {
  name        = "${var.name}-kafka"
  description = "Kafka from the EKS cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "plaintext" {
  security_group_id            = aws_security_group.this.id
  description                  = "Kafka plaintext from EKS"
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 9092
  to_port                      = 9092
}

resource "aws_vpc_security_group_ingress_rule" "tls" {
  security_group_id            = aws_security_group.this.id
  description                  = "Kafka TLS from EKS"
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 9094
  to_port                      = 9094
}

resource "aws_msk_configuration" "this" {
  name           = var.name
  kafka_versions = [var.kafka_version]
  server_properties = join("\n", [
    "auto.create.topics.enable=false",
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "num.partitions=12",
    "log.retention.hours=72",
  ])
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/msk/${var.name}"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
}

resource "aws_msk_cluster" "this" {
  #checkov:skip=CKV_AWS_81:Sentinel's Kafka client (librdkafka built without TLS) speaks plaintext; it stays inside the VPC's data subnets, TLS is offered beside it
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = length(var.subnet_ids)

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.this.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.broker_storage_gb
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS_PLAINTEXT"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }
}
