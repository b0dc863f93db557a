output "vpc_id" {
  value = aws_vpc.this.id
}

output "cidr" {
  value = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "EKS nodes and pods."
  value       = aws_subnet.private[*].id
}

output "data_subnet_ids" {
  description = "RDS, MSK and ClickHouse: no route out of the VPC."
  value       = aws_subnet.data[*].id
}

output "public_subnet_ids" {
  value = aws_subnet.public[*].id
}
