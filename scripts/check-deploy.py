#!/usr/bin/env python3
"""Offline checks of terraform/ with python-hcl2 (run by scripts/check-deploy.sh).

1. Every .tf file under terraform/ parses.
2. The executor's IAM policy (terraform/modules/iam/main.tf, data
   "aws_iam_policy_document" "executor") grants exactly the EC2 and ECS calls
   executors/src/aws.rs makes, derived from the code: each `self.client.<op>()`
   inside an `impl` of a type whose `client` is `aws_sdk_ec2::Client` or
   `aws_sdk_ecs::Client`, named as IAM names it (`ec2:StopInstances`). No action
   is a wildcard, and every call that changes something is granted only on
   resources carrying the managed tag.

3. `check-deploy.py checkov WHAT REPORT`: checkov's JSON report on WHAT has no
   failed check, no parsing error, and no skip without a reason.

Prints one line per check and exits 1 on the first failure.
"""
import json
import pathlib
import re
import sys

import hcl2

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Calls that only read: everything else must be tag-conditioned.
READ_PREFIXES = ("Describe", "List", "Get")


def fail(msg):
    print(f"check-deploy: {msg}", file=sys.stderr)
    sys.exit(1)


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def parse_all():
    files = sorted((ROOT / "terraform").rglob("*.tf"))
    if not files:
        fail("no .tf file under terraform/")
    parsed = {}
    for path in files:
        if ".terraform" in path.parts:
            continue
        try:
            with path.open() as f:
                parsed[path] = hcl2.load(f)
        except Exception as e:  # python-hcl2 raises lark's errors, of several types
            fail(f"{path.relative_to(ROOT)} does not parse: {e}")
    print(f"ok: {len(parsed)} .tf files parse with python-hcl2")
    return parsed


def calls_in_code():
    """(service, Operation) of every AWS SDK call the executors make."""
    src = (ROOT / "executors/src/aws.rs").read_text()
    # Which SDK each type's `client` field is.
    service_of_type = {}
    for m in re.finditer(r"pub struct (\w+) \{[^}]*?client: aws_sdk_(\w+)::Client", src, re.S):
        service_of_type[m.group(1)] = m.group(2)
    impls = [(m.start(), m.group(1)) for m in re.finditer(r"^impl(?:\s+\w+\s+for)?\s+(\w+)\s*\{", src, re.M)]
    calls = set()
    for m in re.finditer(r"self\s*\.\s*client\s*\.\s*([a-z_]+)\(\)", src):
        owner = [name for start, name in impls if start < m.start()]
        if not owner or owner[-1] not in service_of_type:
            fail(f"aws.rs: cannot tell which client `{m.group(1)}` at byte {m.start()} belongs to")
        op = "".join(part.capitalize() for part in m.group(1).split("_"))
        calls.add(f"{service_of_type[owner[-1]]}:{op}")
    if not calls:
        fail("found no AWS SDK call in executors/src/aws.rs; has the code moved?")
    return calls


def executor_policy(parsed):
    iam = parsed[ROOT / "terraform/modules/iam/main.tf"]
    for block in iam.get("data", []):
        for kind, named in block.items():
            if unquote(kind) != "aws_iam_policy_document":
                continue
            for name, body in named.items():
                if unquote(name) == "executor":
                    return body["statement"]
    fail("terraform/modules/iam/main.tf has no data.aws_iam_policy_document.executor")


def main():
    parsed = parse_all()
    code = calls_in_code()
    granted = {}
    for st in executor_policy(parsed):
        if unquote(st.get("effect", '"Allow"')) != "Allow":
            continue
        conditions = {unquote(c["variable"]) for c in st.get("condition", [])}
        for action in st["actions"]:
            action = unquote(action)
            if "*" in action:
                fail(f"the executor policy grants a wildcard action {action}")
            granted.setdefault(action, []).append((unquote(st.get("sid", "?")), conditions))
    if set(granted) != code:
        fail(
            "the executor policy and executors/src/aws.rs disagree:\n"
            f"  called but not granted: {sorted(code - set(granted))}\n"
            f"  granted but never called: {sorted(set(granted) - code)}"
        )
    for action, grants in sorted(granted.items()):
        if action.split(":")[1].startswith(READ_PREFIXES):
            continue
        for sid, conditions in grants:
            if not any(c.startswith("aws:ResourceTag/") for c in conditions):
                fail(f"{action} (statement {sid}) changes resources but is not limited by a resource tag")
    print(f"ok: the executor policy grants exactly the {len(code)} calls in executors/src/aws.rs: {', '.join(sorted(code))}")


def checkov(what, path):
    try:
        reports = json.load(open(path))
    except ValueError:
        fail(f"checkov printed no JSON report for {what}: {open(path).read()[:2000]}")
    reports = reports if isinstance(reports, list) else [reports]
    passed = failed = skipped = 0
    for r in reports:
        results = r.get("results", {})
        passed += r.get("summary", {}).get("passed", 0)
        if r.get("summary", {}).get("parsing_errors"):
            failed += 1
            print(f"check-deploy: {what}: checkov could not parse {results.get('parsing_errors')}", file=sys.stderr)
        for c in results.get("failed_checks", []):
            failed += 1
            print(f"check-deploy: {what}: {c['check_id']} {c['check_name']}: {c['resource']} "
                  f"({c.get('file_path')}:{c.get('file_line_range')})", file=sys.stderr)
        for c in results.get("skipped_checks", []):
            skipped += 1
            reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
            if len(reason) < 15 or reason.lower().startswith("no comment"):
                failed += 1
                print(f"check-deploy: {what}: {c['check_id']} on {c['resource']} is skipped without a reason",
                      file=sys.stderr)
    if passed == 0:
        fail(f"checkov ran no check on {what}")
    print(f"{'ok' if failed == 0 else 'FAILED'}: checkov {what}: {passed} passed, {failed} failed, "
          f"{skipped} skipped with a reason")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["checkov"]:
        checkov(*sys.argv[2:4])
    else:
        main()
