output "url" {
  value = "http://${aws_route53_record.clickhouse.fqdn}:8123"
}
