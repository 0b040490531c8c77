#!/usr/bin/env python3
"""blobpipe's own policies for the Bicep in bicep/ -- what checkov does not check.

Standard library only. Works on the Bicep *text* (comment- and string-aware brace
matching, regexes inside the matched blocks), because no Bicep compiler is available
offline. Every finding is printed as

    FAIL [rule-id] path: message

and the exit status is 1 when there is at least one finding.

Usage:
    bicep_policies.py [DIR] [--lifecycle-json FILE]
    bicep_policies.py --checkov-report CHECKOV_JSON      (summarise a checkov JSON report)
    bicep_policies.py --apply-case CASE_JSON DIR         (self-test helper: apply a broken fixture)

Rules (DIR defaults to bicep/):
    forbidden-syntax        no import, @export(), lambdas (=>) or spread (...): checkov's parser can't read them
    job-identity            every Container Apps job has a managed identity
    job-replica-timeout     every Container Apps job sets configuration.replicaTimeout (> 0)
    blob-versioning         every blob service enables versioning
    blob-soft-delete        every blob service enables blob and container soft delete (delete retention)
    blob-change-feed        the backup blob service enables change feed (object replication needs it)
    lifecycle-present       a lifecycle management policy (managementPolicies) exists
    lifecycle-no-delete     no lifecycle rule has a delete action on a packs prefix
    lifecycle-packs-only    every lifecycle rule's prefixMatch ends in /packs/ (manifests stay Hot)
    role-blob-data-contributor  the data role assigned on the backup container is exactly
                            Storage Blob Data Contributor (ba92f5b4-2d11-453d-a403-e96b0029c9fe)
    role-scope              Storage Blob Data Contributor is assigned at container scope only
    role-queue              a role assigned on a queue (scale-out work / dead-letter queues) is
                            a Storage Queue Data role, and every scale-out job's queues get one
    example-params          example parameter files: known parameters, sane lifecycle rules and jobs
    lifecycle-json          (--lifecycle-json) example lifecycle rules equal `blobpipe lifecycle` output
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TIERS = (("coolAfterDays", "tierToCool"), ("coldAfterDays", "tierToCold"), ("archiveAfterDays", "tierToArchive"))
ARCHIVE_SKUS = {"Standard_LRS", "Standard_GRS", "Standard_RAGRS"}


@dataclass
class Findings:
    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, rule: str, path: Path | str, message: str) -> None:
        self.items.append((rule, str(path), message))

    def report(self) -> int:
        for rule, path, message in self.items:
            print(f"FAIL [{rule}] {path}: {message}")
        return 1 if self.items else 0


# ---------------------------------------------------------------------------------------
# Bicep text helpers
# ---------------------------------------------------------------------------------------

def mask(text: str) -> str:
    """Blank out comments and string contents (keeping offsets and newlines), so brace
    matching and key searches see only code. String delimiters are kept."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if text[k] != "\n":
                    out[k] = " "
            i = j
        elif text.startswith("'''", i):
            j = text.find("'''", i + 3)
            j = n if j < 0 else j
            for k in range(i + 3, j):
                if text[k] != "\n":
                    out[k] = " "
            i = j + 3
        elif c == "'":
            j = i + 1
            depth = 0  # inside ${ ... } interpolation: keep code visible
            while j < n:
                if depth == 0 and text[j] == "\\":
                    out[j] = " "
                    if j + 1 < n:
                        out[j + 1] = " "
                    j += 2
                    continue
                if depth == 0 and text[j] == "'":
                    break
                if depth == 0 and text.startswith("${", j):
                    depth = 1
                    j += 2
                    continue
                if depth > 0:
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                    j += 1
                    continue
                if text[j] != "\n":
                    out[j] = " "
                j += 1
            i = j + 1
        else:
            i += 1
    return "".join(out)


def match_brace(masked: str, open_idx: int) -> int:
    """Index of the brace/bracket closing the one at open_idx (in masked text), or -1."""
    pairs = {"{": "}", "[": "]"}
    stack = []
    for i in range(open_idx, len(masked)):
        c = masked[i]
        if c in pairs:
            stack.append(pairs[c])
        elif c in ("}", "]"):
            if not stack or stack.pop() != c:
                return -1
            if not stack:
                return i
    return -1


@dataclass
class Block:
    start: int  # offset of the opening brace
    end: int  # offset of the closing brace

    def text(self, src: str) -> str:
        return src[self.start : self.end + 1]


def key_blocks(masked: str, key: str, start: int = 0, end: int | None = None) -> list[Block]:
    """All `key: { ... }` object blocks between start and end."""
    end = len(masked) if end is None else end
    blocks = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(key)}\s*:\s*\{{", masked[start:end]):
        open_idx = start + m.end() - 1
        close = match_brace(masked, open_idx)
        if close > 0:
            blocks.append(Block(open_idx, close))
    return blocks


@dataclass
class Resource:
    symbol: str
    type: str
    existing: bool
    block: Block
    line: int


RESOURCE_RE = re.compile(r"^[ \t]*resource\s+(\w+)\s+'([^']+)'\s*(existing)?\s*=", re.M)


class BicepFile:
    def __init__(self, path: Path, root: Path):
        self.path = path
        self.rel = path.relative_to(root) if path.is_relative_to(root) else path
        self.src = path.read_text(encoding="utf-8")
        self.masked = mask(self.src)
        self.resources: list[Resource] = []
        # RESOURCE_RE runs on the original text (the type is a string literal) but only
        # at offsets that are code in the masked text.
        for m in RESOURCE_RE.finditer(self.src):
            if not self.masked[m.start() : m.start() + 8].strip().startswith("resource"):
                continue
            open_idx = self.masked.find("{", m.end())
            close = match_brace(self.masked, open_idx) if open_idx >= 0 else -1
            if close < 0:
                continue
            self.resources.append(
                Resource(m.group(1), m.group(2), bool(m.group(3)), Block(open_idx, close), self.src.count("\n", 0, m.start()) + 1)
            )
        self.vars = {m.group(1): m.group(2) for m in re.finditer(r"^[ \t]*var\s+(\w+)\s*=\s*'([^']*)'", self.src, re.M)}

    def of_type(self, prefix: str, include_existing: bool = False) -> list[Resource]:
        return [r for r in self.resources if r.type.split("@")[0] == prefix and (include_existing or not r.existing)]

    def where(self, r: Resource) -> str:
        return f"{self.rel}:{r.line} ({r.symbol})"

    def code(self, block: Block) -> str:
        return self.masked[block.start : block.end + 1]

    def literal_true(self, block: Block, key: str) -> bool:
        return re.search(rf"(?<![\w.]){key}\s*:\s*true\b", self.code(block)) is not None


def load_bicep(root: Path) -> list[BicepFile]:
    return [BicepFile(p, root) for p in sorted(root.rglob("*.bicep"))]


# ---------------------------------------------------------------------------------------
# Rules over Bicep
# ---------------------------------------------------------------------------------------

def rule_forbidden_syntax(files: list[BicepFile], f: Findings) -> None:
    for bf in files:
        for lineno, line in enumerate(bf.masked.splitlines(), 1):
            for pattern, what in (
                (r"^\s*import\b", "import"),
                (r"@export\s*\(", "@export()"),
                (r"=>", "lambda (=>)"),
                (r"\.\.\.", "spread (...)"),
            ):
                if re.search(pattern, line):
                    f.add("forbidden-syntax", f"{bf.rel}:{lineno}", f"{what} is not readable by checkov's offline Bicep parser; rewrite without it")


def rule_jobs(files: list[BicepFile], f: Findings) -> None:
    for bf in files:
        for r in bf.of_type("Microsoft.App/jobs"):
            ids = key_blocks(bf.masked, "identity", r.block.start, r.block.end)
            body = bf.code(ids[0]) if ids else ""
            if not ids or not (re.search(r"userAssignedIdentities\s*:", body) or "SystemAssigned" in bf.src[ids[0].start : ids[0].end]):
                f.add("job-identity", bf.where(r), "Container Apps job has no managed identity (identity: { type: 'UserAssigned', userAssignedIdentities: {...} })")
            configs = key_blocks(bf.masked, "configuration", r.block.start, r.block.end)
            cfg = bf.code(configs[0]) if configs else ""
            m = re.search(r"(?<![\w.])replicaTimeout\s*:\s*([^\n]+)", cfg)
            if not m or m.group(1).strip() in ("0", "null"):
                f.add("job-replica-timeout", bf.where(r), "Container Apps job has no configuration.replicaTimeout (a hung backup would run forever)")


def rule_blob_services(files: list[BicepFile], f: Findings) -> None:
    change_feed = False
    seen = False
    for bf in files:
        for r in bf.of_type("Microsoft.Storage/storageAccounts/blobServices"):
            seen = True
            if not bf.literal_true(r.block, "isVersioningEnabled"):
                f.add("blob-versioning", bf.where(r), "blob versioning is not enabled (isVersioningEnabled: true)")
            for key, what in (("deleteRetentionPolicy", "blob"), ("containerDeleteRetentionPolicy", "container")):
                blocks = key_blocks(bf.masked, key, r.block.start, r.block.end)
                if not blocks or not bf.literal_true(blocks[0], "enabled"):
                    f.add("blob-soft-delete", bf.where(r), f"{what} soft delete is not enabled ({key}: {{ enabled: true, days: N }})")
            cf = key_blocks(bf.masked, "changeFeed", r.block.start, r.block.end)
            if cf and bf.literal_true(cf[0], "enabled"):
                change_feed = True
    if seen and not change_feed:
        f.add("blob-change-feed", "bicep", "no blob service enables change feed (changeFeed: { enabled: true }); object replication needs it on the backup account")
    if not seen:
        f.add("blob-versioning", "bicep", "no blob service (Microsoft.Storage/storageAccounts/blobServices) found")


def rule_lifecycle(files: list[BicepFile], f: Findings) -> None:
    if not any(bf.of_type("Microsoft.Storage/storageAccounts/managementPolicies") for bf in files):
        f.add("lifecycle-present", "bicep", "no lifecycle management policy (Microsoft.Storage/storageAccounts/managementPolicies) found")
    for bf in files:
        if not bf.of_type("Microsoft.Storage/storageAccounts/managementPolicies") and "prefixMatch" not in bf.masked:
            continue
        for d in key_blocks(bf.masked, "definition"):
            code = bf.code(d)
            if "actions" not in code:
                continue
            line = f"{bf.rel}:{bf.src.count(chr(10), 0, d.start) + 1}"
            pm = re.search(r"prefixMatch\s*:\s*\[", code)
            if not pm:
                f.add("lifecycle-packs-only", line, "lifecycle rule has no prefixMatch filter: it would apply to the whole account, manifests included")
                prefixes = []
            else:
                open_idx = d.start + pm.end() - 1
                close = match_brace(bf.masked, open_idx)
                prefixes = re.findall(r"'([^']*)'", bf.src[open_idx : close + 1])
                for p in prefixes:
                    if not p.endswith("/packs/"):
                        f.add("lifecycle-packs-only", line, f"prefixMatch '{p}' is not a '<container>/<prefix>/packs/' prefix; only packs may change tier")
            for a in key_blocks(bf.masked, "actions", d.start, d.end):
                if re.search(r"(?<![\w.])delete\s*:", bf.code(a)):
                    f.add("lifecycle-no-delete", line, f"lifecycle rule on {prefixes or 'the whole account'} has a delete action; packs are deleted only by blobpipe retention")


def _role_ids(bf: BicepFile, expr: str) -> set[str]:
    ids = set(GUID_RE.findall(expr))
    for name in re.findall(r"\b([A-Za-z_]\w*)\b", expr):
        value = bf.vars.get(name)
        if value and GUID_RE.fullmatch(value):
            ids.add(value)
    return {i.lower() for i in ids}


QUEUE_DATA_ROLES = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
    "8a0f0c08-91a1-4084-bc3d-661d67233fed",  # Storage Queue Data Message Processor
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",  # Storage Queue Data Message Sender
    "19e7f393-937e-4f77-808e-94535e297925",  # Storage Queue Data Reader
}


def rule_queue_roles(files: list[BicepFile], f: Findings) -> None:
    """Scale-out: roles on a queue are queue data roles (least privilege: never a blob or
    owner role at queue scope), and a file that declares queues for jobs grants on them."""
    for bf in files:
        symbols = {r.symbol: r for r in bf.resources}
        queue_scoped = 0
        for r in bf.of_type("Microsoft.Authorization/roleAssignments"):
            body = bf.code(r.block)
            sm = re.search(r"(?<![\w.])scope\s*:\s*(\w+)", body)
            scope = symbols.get(sm.group(1)) if sm else None
            if not scope or scope.type.split("@")[0] != "Microsoft.Storage/storageAccounts/queueServices/queues":
                continue
            queue_scoped += 1
            rm = re.search(r"roleDefinitionId\s*:\s*([^\n]+)", r.block.text(bf.src))
            ids = _role_ids(bf, rm.group(1)) if rm else set()
            if not ids or not ids <= QUEUE_DATA_ROLES:
                shown = ", ".join(sorted(ids)) or "none"
                f.add("role-queue", bf.where(r), f"role {shown} assigned on a queue; use a Storage Queue Data role (Contributor, Message Processor, Message Sender, Reader)")
        declares_queues = bool(bf.of_type("Microsoft.Storage/storageAccounts/queueServices/queues"))
        if declares_queues and bf.of_type("Microsoft.App/jobs") and queue_scoped == 0:
            f.add("role-queue", bf.rel, "jobs and their work queues are declared, but no role is assigned on the queues (the job identity could not receive)")


def rule_roles(files: list[BicepFile], f: Findings) -> None:
    container_assignments = 0
    for bf in files:
        symbols = {r.symbol: r for r in bf.resources}
        for r in bf.of_type("Microsoft.Authorization/roleAssignments"):
            body = bf.code(r.block)
            src_body = r.block.text(bf.src)
            sm = re.search(r"(?<![\w.])scope\s*:\s*(\w+)", body)
            scope = symbols.get(sm.group(1)) if sm else None
            scope_type = scope.type.split("@")[0] if scope else "(resource group)"
            rm = re.search(r"roleDefinitionId\s*:\s*([^\n]+)", src_body)
            ids = _role_ids(bf, rm.group(1)) if rm else set()
            if scope_type == "Microsoft.Storage/storageAccounts/blobServices/containers":
                container_assignments += 1
                if ids != {BLOB_DATA_CONTRIBUTOR}:
                    shown = ", ".join(sorted(ids)) or (rm.group(1).strip() if rm else "none")
                    f.add("role-blob-data-contributor", bf.where(r), f"data role on the backup container is {shown}, expected Storage Blob Data Contributor {BLOB_DATA_CONTRIBUTOR}")
            elif BLOB_DATA_CONTRIBUTOR in ids:
                f.add("role-scope", bf.where(r), f"Storage Blob Data Contributor assigned at {scope_type} scope; scope it to the backup container")
    if container_assignments == 0:
        f.add("role-blob-data-contributor", "bicep", "no role assignment scoped to the backup container (Storage Blob Data Contributor) found")


# ---------------------------------------------------------------------------------------
# Example parameter files
# ---------------------------------------------------------------------------------------

def main_params(root: Path) -> dict[str, str]:
    """name -> default expression text ('' if none) of main.bicep's parameters."""
    main = root / "main.bicep"
    if not main.exists():
        return {}
    out = {}
    for m in re.finditer(r"^[ \t]*param\s+(\w+)\s+\w+(?:\s*=\s*([^\n]*))?$", main.read_text(encoding="utf-8"), re.M):
        out[m.group(1)] = (m.group(2) or "").strip()
    return out


def example_files(root: Path) -> list[Path]:
    return sorted((root / "examples").glob("*.parameters.json")) if (root / "examples").is_dir() else []


def load_params(path: Path) -> dict:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {k: v.get("value") for k, v in doc.get("parameters", {}).items() if isinstance(v, dict)}


def rule_name(name: str) -> str:
    return "packs" + re.sub(r"[-_.]", "", name)


def container_of(params: dict, defaults: dict[str, str]) -> str:
    if "containerName" in params:
        return params["containerName"]
    m = re.match(r"'([^']*)'", defaults.get("containerName", ""))
    return m.group(1) if m else "backups"


def expected_rules(params: dict, defaults: dict[str, str]) -> dict[str, dict[str, int]]:
    """prefixMatch -> {tierAction: days} from an example parameter file."""
    container = container_of(params, defaults)
    out = {}
    for r in params.get("lifecycleRules") or []:
        out[f"{container}/{r.get('prefix')}/packs/"] = {action: r.get(key, 0) for key, action in TIERS if r.get(key, 0)}
    return out


def rule_examples(root: Path, f: Findings) -> None:
    files = example_files(root)
    if not files:
        f.add("example-params", root / "examples", "no example parameter files (*.parameters.json)")
        return
    known = main_params(root)
    for path in files:
        rel = path.relative_to(root)
        try:
            params = load_params(path)
        except (OSError, ValueError) as e:
            f.add("example-params", rel, f"not a readable parameters JSON: {e}")
            continue
        for name in params:
            if known and name not in known:
                f.add("example-params", rel, f"parameter '{name}' does not exist in main.bicep")
        prefix = params.get("namePrefix", "blobpipe")
        if not re.fullmatch(r"[a-z0-9]{2,10}", str(prefix)):
            f.add("example-params", rel, f"namePrefix '{prefix}' must be 2-10 lowercase letters/digits (storage account names)")
        rules = params.get("lifecycleRules")
        if not isinstance(rules, list) or not rules:
            f.add("example-params", rel, "lifecycleRules must be a non-empty array (one rule per pipeline)")
            rules = []
        names, prefixes, archive = set(), set(), False
        for i, r in enumerate(rules):
            where = f"lifecycleRules[{i}]"
            missing = [k for k in ("name", "prefix", "coolAfterDays", "coldAfterDays", "archiveAfterDays") if k not in r]
            if missing:
                f.add("example-params", rel, f"{where} lacks {', '.join(missing)}")
                continue
            p = str(r["prefix"])
            if not p or p.startswith("/") or p.endswith("/"):
                f.add("example-params", rel, f"{where} prefix '{p}' must be non-empty without leading/trailing '/'")
            if rule_name(str(r["name"])) in names:
                f.add("example-params", rel, f"{where} name '{r['name']}' collides with another rule once '-', '_', '.' are removed")
            if p in prefixes:
                f.add("example-params", rel, f"{where} prefix '{p}' appears twice")
            names.add(rule_name(str(r["name"])))
            prefixes.add(p)
            days = [r[k] for k, _ in TIERS]
            if any(not isinstance(d, int) or d < 0 for d in days):
                f.add("example-params", rel, f"{where} day counts must be integers >= 0")
                continue
            if not any(days):
                f.add("example-params", rel, f"{where} has no tier action (all day counts are 0)")
            set_days = [d for d in days if d]
            if set_days != sorted(set(set_days)):
                f.add("example-params", rel, f"{where} tiers must get colder with age: cool < cold < archive days")
            archive = archive or r["archiveAfterDays"] > 0
        sku = params.get("storageSkuName", "Standard_GRS")
        if archive and sku not in ARCHIVE_SKUS:
            f.add("example-params", rel, f"archive tier is used but storageSkuName is {sku}; Archive needs {', '.join(sorted(ARCHIVE_SKUS))}")
        mode = params.get("deploymentMode", "containerAppsJob")
        if mode == "containerAppsJob":
            jobs = params.get("jobs")
            if not isinstance(jobs, list) or not jobs:
                f.add("example-params", rel, "containerAppsJob mode needs a non-empty jobs array")
                jobs = []
            if not params.get("containerImage"):
                f.add("example-params", rel, "containerAppsJob mode needs containerImage")
            for i, j in enumerate(jobs):
                where = f"jobs[{i}]"
                missing = [k for k in ("name", "cron", "pipelineFile", "cpu", "memory") if k not in j]
                if missing:
                    f.add("example-params", rel, f"{where} lacks {', '.join(missing)}")
                    continue
                if len(str(j["cron"]).split()) != 5:
                    f.add("example-params", rel, f"{where} cron '{j['cron']}' must have 5 fields (Container Apps jobs use 5-field cron, UTC)")
                if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,28}[a-z0-9]?", str(j["name"])):
                    f.add("example-params", rel, f"{where} name '{j['name']}' must be lowercase letters, digits and '-' (job name 'bp-<name>' <= 32 chars)")
                if not str(j["pipelineFile"]).endswith(".toml") or "/" in str(j["pipelineFile"]):
                    f.add("example-params", rel, f"{where} pipelineFile must be a .toml file name inside /etc/blobpipe/pipelines")
                if not isinstance(j["cpu"], str):
                    f.add("example-params", rel, f"{where} cpu must be a string such as \"0.5\" (Bicep has no float literals)")


# ---------------------------------------------------------------------------------------
# --lifecycle-json: compare with `blobpipe lifecycle` output
# ---------------------------------------------------------------------------------------

def rules_from_policy_json(doc: dict) -> tuple[dict[str, dict[str, int]], list[str]]:
    """prefixMatch -> {tierAction: days}, plus problems, from Azure management policy JSON."""
    problems = []
    policy = doc.get("policy", doc.get("properties", {}).get("policy")) if isinstance(doc, dict) else None
    if not isinstance(policy, dict) or not isinstance(policy.get("rules"), list):
        return {}, ['expected {"policy": {"rules": [...]}}']
    out: dict[str, dict[str, int]] = {}
    for i, rule in enumerate(policy["rules"]):
        definition = rule.get("definition", {})
        prefixes = definition.get("filters", {}).get("prefixMatch") or []
        actions = definition.get("actions", {})
        base = actions.get("baseBlob", {})
        if not prefixes:
            problems.append(f"rule {i} ({rule.get('name')}) has no prefixMatch")
        for scope in ("baseBlob", "snapshot", "version"):
            if "delete" in actions.get(scope, {}):
                problems.append(f"rule {i} ({rule.get('name')}) has a {scope} delete action")
        tiers = {}
        for _, action in TIERS:
            if action in base:
                cond = base[action]
                if "daysAfterModificationGreaterThan" not in cond:
                    problems.append(f"rule {i} ({rule.get('name')}) {action} is not based on daysAfterModificationGreaterThan: {sorted(cond)}")
                tiers[action] = cond.get("daysAfterModificationGreaterThan")
        for p in prefixes:
            if p in out:
                problems.append(f"prefixMatch {p} appears in more than one rule")
            out[p] = tiers
    return out, problems


def rule_lifecycle_json(root: Path, json_path: Path, f: Findings) -> None:
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        f.add("lifecycle-json", json_path, f"cannot read: {e}")
        return
    actual, problems = rules_from_policy_json(doc)
    for p in problems:
        f.add("lifecycle-json", json_path, p)
    defaults = main_params(root)
    compared = 0
    for path in example_files(root):
        params = load_params(path)
        if "lifecycleRules" not in params:
            continue
        compared += 1
        expected = expected_rules(params, defaults)
        rel = path.relative_to(root)
        for prefix in sorted(set(expected) | set(actual)):
            if prefix not in actual:
                f.add("lifecycle-json", rel, f"rule for {prefix} is in the Bicep parameters but not in {json_path}")
            elif prefix not in expected:
                f.add("lifecycle-json", rel, f"rule for {prefix} is in {json_path} but not in the Bicep parameters")
            elif expected[prefix] != actual[prefix]:
                f.add("lifecycle-json", rel, f"rule for {prefix} differs: Bicep {expected[prefix]} vs blobpipe lifecycle {actual[prefix]}")
    if compared == 0:
        f.add("lifecycle-json", root / "examples", "no example parameter file with lifecycleRules to compare with")


# ---------------------------------------------------------------------------------------
# checkov report and self-test helpers
# ---------------------------------------------------------------------------------------

def checkov_report(path: Path) -> int:
    """Print a summary of a checkov JSON report; fail on failed checks, parse errors, and
    skips without a reason."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"FAIL [checkov] {path}: checkov did not produce a JSON report: {e}")
        return 1
    reports = doc if isinstance(doc, list) else [doc]
    failed = 0
    totals = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
    for rep in reports:
        summary = rep.get("summary", rep)
        for k in totals:
            totals[k] += int(summary.get(k, 0) or 0)
        results = rep.get("results", {})
        for c in results.get("failed_checks", []):
            failed += 1
            print(f"FAIL [checkov] {c.get('file_path')}:{(c.get('file_line_range') or ['?'])[0]} {c.get('check_id')} {c.get('check_name')} ({c.get('resource')})")
        for p in results.get("parsing_errors", []):
            failed += 1
            print(f"FAIL [checkov-parse] {p}: checkov could not parse this file (checkov itself exits 0 on this)")
        for c in results.get("skipped_checks", []):
            reason = (c.get("check_result") or {}).get("suppress_comment", "")
            if not reason or reason == "No comment provided":
                failed += 1
                print(f"FAIL [checkov-skip] {c.get('file_path')} {c.get('check_id')}: skipped without a reason")
            else:
                print(f"skip  {c.get('check_id')} {c.get('file_path')} ({c.get('resource')}): {reason.strip()}")
    if totals["parsing_errors"] and not any(r.get("results", {}).get("parsing_errors") for r in reports):
        failed += 1
        print(f"FAIL [checkov-parse] {totals['parsing_errors']} file(s) failed to parse")
    if totals["failed"] and not failed:
        failed += 1
        print(f"FAIL [checkov] {totals['failed']} failed check(s)")
    if totals["resource_count"] == 0 and totals["passed"] == 0:
        failed += 1
        print("FAIL [checkov] no resources scanned: wrong directory or every file failed to parse")
    print(
        "checkov: passed={passed} failed={failed} skipped={skipped} parsing_errors={parsing_errors} resources={resource_count}".format(**totals)
    )
    return 1 if failed else 0


def apply_case(case_path: Path, target: Path) -> int:
    """Apply a broken fixture (edits: exact, unique string replacements) to a copy."""
    case = json.loads(case_path.read_text(encoding="utf-8"))
    for edit in case["edits"]:
        path = target / edit["file"]
        text = path.read_text(encoding="utf-8")
        count = text.count(edit["old"])
        if count != 1:
            print(f"fixture {case_path}: expected exactly one occurrence of {edit['old']!r} in {edit['file']}, found {count}; update the fixture")
            return 2
        path.write_text(text.replace(edit["old"], edit["new"]), encoding="utf-8")
    print(case["expect"])
    return 0


def main(argv: list[str]) -> int:
    args = list(argv)
    if args[:1] == ["--checkov-report"] and len(args) == 2:
        return checkov_report(Path(args[1]))
    if args[:1] == ["--apply-case"] and len(args) == 3:
        return apply_case(Path(args[1]), Path(args[2]))
    lifecycle_json = None
    if "--lifecycle-json" in args:
        i = args.index("--lifecycle-json")
        if i + 1 >= len(args):
            print("--lifecycle-json needs a FILE", file=sys.stderr)
            return 2
        lifecycle_json = Path(args[i + 1])
        del args[i : i + 2]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bicep")).resolve()
    if not (root / "main.bicep").exists():
        print(f"FAIL [setup] {root}: no main.bicep here")
        return 1
    findings = Findings()
    files = load_bicep(root)
    rule_forbidden_syntax(files, findings)
    rule_jobs(files, findings)
    rule_blob_services(files, findings)
    rule_lifecycle(files, findings)
    rule_roles(files, findings)
    rule_queue_roles(files, findings)
    rule_examples(root, findings)
    if lifecycle_json is not None:
        rule_lifecycle_json(root, lifecycle_json, findings)
    status = findings.report()
    jobs = sum(len(bf.of_type("Microsoft.App/jobs")) for bf in files)
    print(f"policies: {len(files)} Bicep files, {jobs} job resource(s), {len(example_files(root))} example parameter file(s), {len(findings.items)} finding(s)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
