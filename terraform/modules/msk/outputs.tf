output "bootstrap_brokers" {
  description = "Plaintext bootstrap brokers (host:9092,...)."
  value       = aws_msk_cluster.this.bootstrap_brokers
}
