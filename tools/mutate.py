#!/usr/bin/env python3
"""Mutation testing of the C sources: does a test fail when the code is wrong?

Each mutant changes one thing on one line (a comparison or logical operator flipped,
+ and - swapped, a small integer literal moved by one, an if condition's first operand
negated, an assignment statement deleted), is built, and the CPU tests run until one
fails (killed) or none does (survived). A survivor is either a gap in the tests or an
equivalent mutant (a buffer size, a bound nothing reaches, an out-of-memory path); read
each one. Nothing here edits the checkout: mutants are applied in git worktrees.

    git worktree add --detach /tmp/mut1 HEAD            # one per parallel worker
    cmake -S /tmp/mut1 -B /tmp/mut1/b -DERT_CUDA=OFF -DERT_BENCH=OFF && cmake --build /tmp/mut1/b -j2
    python3 tools/mutate.py list --per-file 20 runtime/frontier.c runtime/policy.c > mutants.jsonl
    python3 tools/mutate.py run /tmp/mut1 mutants.jsonl results.jsonl    # resumable
    python3 tools/mutate.py summary results.jsonl
    git worktree remove --force /tmp/mut1

`run` tries the test named after the file first (test_frontier for frontier.c), then
the other fast CPU tests, then test_fmnist with --fmnist (minutes per survivor). A test
that hangs counts as killed after 90 s. Only one mutant per worktree at a time; a
worker stopped mid-mutant leaves it applied (`git -C WORKTREE checkout -- runtime`).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

FLIP = {"<=": "<", ">=": ">", "==": "!=", "!=": "==", "<": "<=", ">": ">=", "&&": "||", "||": "&&"}
DELETED = "/* deleted */"


def code_only(lines):
    """Each line with comments and string and character literals blanked (same columns)."""
    out, in_comment = [], False
    for s in lines:
        buf, i = [], 0
        while i < len(s):
            if in_comment:
                j = s.find("*/", i)
                end = len(s) if j < 0 else j + 2
                buf.append(" " * (end - i))
                in_comment, i = j < 0, end
            elif s.startswith("/*", i):
                in_comment = True
            elif s.startswith("//", i):
                buf.append(" " * (len(s) - i))
                break
            elif s[i] in "\"'":
                j = i + 1
                while j < len(s) and s[j] != s[i]:
                    j += 2 if s[j] == "\\" else 1
                j = min(j, len(s) - 1)
                buf.append(s[i] + " " * (j - i - 1) + s[j])
                i = j + 1
            else:
                buf.append(s[i])
                i += 1
        out.append("".join(buf)[:len(s)])
    return out


def mutants(path):
    """(line index, column, old text, new text) of every mutant of the file."""
    lines = open(path).read().split("\n")
    res = []
    for n, m in enumerate(code_only(lines)):
        st = m.strip()
        if not st or st.startswith("#") or "static const char" in st:
            continue
        for mo in re.finditer(r"<=|>=|==|!=|&&|\|\||(?<![<\-])<(?![<=])|(?<![>\-])>(?![>=])", m):
            res.append((n, mo.start(), mo.group(0), FLIP[mo.group(0)]))
        for mo in re.finditer(r"(?<=[\w\)\]] )([+\-])(?= [\w\(])", m):
            res.append((n, mo.start(1), mo.group(1), "-" if mo.group(1) == "+" else "+"))
        for mo in re.finditer(r"(?<![\w.])(\d+)(?![\w.])", m):
            v = int(mo.group(1))
            if v <= 4096:
                res.append((n, mo.start(1), mo.group(1), "1" if v == 0 else "0" if v == 1 else str(v + 1)))
        mo = re.match(r"(\s*(?:\} else )?if \()(.*)\)( \{|)$", m)
        if mo and m.count("(") == m.count(")"):
            res.append((n, len(mo.group(1)) - 1, "(", "(!"))
        if re.match(r"\s*[A-Za-z_][\w\[\]\.\->]*\s*(\+\+|--|[+\-*/|&]?=)[^=].*;\s*$", m) and not re.match(
                r"\s*(const |static |int |size_t |float |double |char |ert_|unsigned |uint|int64|bool )", m):
            res.append((n, 0, lines[n], DELETED))
    return lines, res


def cmd_list(args):
    rnd = random.Random(args.seed)
    for f in args.files:
        lines, ms = mutants(f)
        rnd.shuffle(ms)
        for n, col, old, new in ms[:args.per_file]:
            print(json.dumps({"file": f, "line": n + 1, "col": col, "old": old, "new": new, "text": lines[n].strip()}))


FAST = ["test_policy", "test_frontier", "test_calibrate", "test_model", "test_session", "test_ops", "test_synth",
        "test_shift", "test_data", "test_exec", "test_fuzz", "test_sweep", "test_cli", "test_conv", "test_nvtx",
        "test_loadtest"]
FIRST = {"thresholds": ["test_sweep"], "sweep": ["test_sweep"], "sweep_io": ["test_sweep"],
         "eval": ["test_sweep", "test_cli"], "safetensors": ["test_model"], "backend_cpu": ["test_session"]}


def test_order(path, fmnist):
    stem = os.path.basename(path)[:-2]
    first = FIRST.get(stem, []) + (["test_" + stem] if "test_" + stem in FAST else [])
    return first + [t for t in FAST if t not in first] + (["test_fmnist"] if fmnist else [])


def key(mu):
    return (mu["file"], mu["line"], mu["col"], mu["new"])


def cmd_run(args):
    wt = os.path.abspath(args.worktree)
    build, tests = os.path.join(wt, "b"), os.path.join(wt, "b", "test")
    env = dict(os.environ, ERT_SOURCE_DIR=wt, ERT_CLI=os.path.join(build, "exitrt"), CK_DEFAULT_TIMEOUT="40",
               CK_VERBOSITY="silent")
    env.pop("NVTX_INJECTION64_PATH", None)  # only test_nvtx loads the recorder: it prints
    env_nvtx = dict(env, NVTX_INJECTION64_PATH=os.path.join(tests, "libert_nvtx_inject.so"))
    done = set()
    if os.path.exists(args.out):
        done = {key(json.loads(l)) for l in open(args.out)}
    for l in open(args.mutants):
        mu = json.loads(l)
        if key(mu) in done:
            continue
        path = os.path.join(wt, mu["file"])
        orig = open(path).read()
        lines = orig.split("\n")
        ln = lines[mu["line"] - 1]
        if mu["new"] == DELETED:
            if ln != mu["old"]:
                sys.exit("%s:%d changed since the list was made" % (mu["file"], mu["line"]))
            lines[mu["line"] - 1] = DELETED
        else:
            c = mu["col"]
            if ln[c:c + len(mu["old"])] != mu["old"]:
                sys.exit("%s:%d changed since the list was made" % (mu["file"], mu["line"]))
            lines[mu["line"] - 1] = ln[:c] + mu["new"] + ln[c + len(mu["old"]):]
        t0 = time.time()
        try:
            open(path, "w").write("\n".join(lines))
            if subprocess.run(["cmake", "--build", build, "-j2"], capture_output=True).returncode:
                result, by = "nobuild", ""
            else:
                result, by = "survived", ""
                for t in test_order(mu["file"], args.fmnist):
                    r = subprocess.run(["timeout", "-k", "5", "90", os.path.join(tests, t)], cwd=tests,
                                       env=env_nvtx if t == "test_nvtx" else env, capture_output=True)
                    if r.returncode not in (0, 77):
                        result, by = "killed", "%s:%s" % (t, "timeout" if r.returncode in (124, 137) else r.returncode)
                        break
        finally:
            open(path, "w").write(orig)
        mu.update(result=result, by=by, secs=round(time.time() - t0, 1))
        with open(args.out, "a") as o:
            o.write(json.dumps(mu) + "\n")
    subprocess.run(["cmake", "--build", build, "-j2"], capture_output=True)


def cmd_summary(args):
    rows = [json.loads(l) for f in args.results for l in open(f)]
    count = {}
    for r in rows:
        count[r["result"]] = count.get(r["result"], 0) + 1
    print(" ".join("%s %d" % kv for kv in sorted(count.items())))
    for r in sorted((r for r in rows if r["result"] == "survived"), key=lambda r: (r["file"], r["line"])):
        print("%s:%d  %s -> %s  | %s" % (r["file"], r["line"], r["old"][:40], r["new"], r["text"][:100]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="print a sample of each file's mutants as JSON lines")
    p.add_argument("--per-file", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("files", nargs="+")
    p = sub.add_parser("run", help="build and test each mutant in WORKTREE, appending to OUT")
    p.add_argument("worktree")
    p.add_argument("mutants")
    p.add_argument("out")
    p.add_argument("--fmnist", action="store_true", help="also run test_fmnist (minutes per survivor)")
    p = sub.add_parser("summary", help="counts, and every survivor")
    p.add_argument("results", nargs="+")
    args = ap.parse_args()
    {"list": cmd_list, "run": cmd_run, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    main()
