# IAM roles for Sentinel's Kubernetes service accounts (IRSA): each role can be
# assumed only by its own service account in its own namespace.
#
# The worker's role carries the executor's AWS permissions: exactly the EC2 and
# ECS calls executors/src/aws.rs makes (scripts/check-deploy.py derives them
# from the code and compares), and every mutating call only on resources that
# carry the managed tag.

data "aws_caller_identity" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  # The only tag key the executor writes (executors::aws::KEY_TAG).
  key_tag = "sentinel:last-action-key"
}

data "aws_iam_policy_document" "assume" {
  for_each = toset(["worker", "backup"])
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:sentinel-${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-worker"
  assume_role_policy = data.aws_iam_policy_document.assume["worker"].json
}

resource "aws_iam_role" "backup" {
  name               = "${var.name}-backup"
  assume_role_policy = data.aws_iam_policy_document.assume["backup"].json
}

data "aws_iam_policy_document" "executor" {
  # Reading an instance's state and tags has no resource-level permissions.
  statement {
    sid       = "Ec2Read"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = var.regions
    }
  }
  statement {
    sid       = "Ec2Act"
    actions   = ["ec2:StartInstances", "ec2:StopInstances", "ec2:RebootInstances"]
    resources = [for r in var.regions : "arn:aws:ec2:${r}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.managed_tag.key}"
      values   = [var.managed_tag.value]
    }
  }
  statement {
    sid       = "Ec2Tag"
    actions   = ["ec2:CreateTags"]
    resources = [for r in var.regions : "arn:aws:ec2:${r}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.managed_tag.key}"
      values   = [var.managed_tag.value]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = [local.key_tag]
    }
  }
  statement {
    sid       = "EcsRead"
    actions   = ["ecs:DescribeServices", "ecs:ListTagsForResource"]
    resources = [for r in var.regions : "arn:aws:ecs:${r}:${local.account}:service/*/*"]
  }
  statement {
    sid       = "EcsAct"
    actions   = ["ecs:UpdateService"]
    resources = [for r in var.regions : "arn:aws:ecs:${r}:${local.account}:service/*/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.managed_tag.key}"
      values   = [var.managed_tag.value]
    }
  }
  statement {
    sid       = "EcsTag"
    actions   = ["ecs:TagResource"]
    resources = [for r in var.regions : "arn:aws:ecs:${r}:${local.account}:service/*/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.managed_tag.key}"
      values   = [var.managed_tag.value]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = [local.key_tag]
    }
  }
}

resource "aws_iam_role_policy" "executor" {
  name   = "executor"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.executor.json
}

data "aws_iam_policy_document" "backup" {
  statement {
    sid       = "PutDumps"
    actions   = ["s3:PutObject"]
    resources = ["${var.backup_bucket_arn}/postgres/*"]
  }
  statement {
    sid       = "EncryptDumps"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "backup" {
  name   = "backup"
  role   = aws_iam_role.backup.id
  policy = data.aws_iam_policy_document.backup.json
}
