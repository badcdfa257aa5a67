"""test_docs.py -- README.md's options table and the man page (doc/ndingest.1) say what
`ndingest --help` says: the same options, value names and defaults, and the same options
for `convert` and `schema`. --help comes from the option table in src/options.c, so the docs follow it."""
import re
import subprocess

from conftest import BINARY, ROOT

README = ROOT / "README.md"
MAN = ROOT / "doc" / "ndingest.1"
DEFAULT = re.compile(r"\(default ([^;)]+)")


class Option:
    """An option as one document shows it: its value's name, and its text where the
    "(default X" is found unless the document has a column of its own for it."""

    def __init__(self, arg, text, default=None):
        self.arg, self.text, self.column = arg, text, default

    @property
    def default(self):
        if self.column is not None:
            return self.column
        m = DEFAULT.search(self.text)
        return m and m.group(1)

    def __repr__(self):
        return f"Option(arg={self.arg!r}, default={self.default!r})"


def help_text():
    p = subprocess.run([str(BINARY), "--help"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def help_options():
    """name -> Option from --help: each entry is "  --name ARG" padded to column 23, then
    its text, continued on lines indented to column 23 (an option too wide for the column
    stands alone on its line, its text on the next)."""
    options, entry = {}, None
    for line in help_text().splitlines():
        if re.fullmatch(r"  (-\w, )?--[a-z-]+( \S+)?", line) and len(line) > 22:
            # too wide for the column: the text starts on the next line
            left = line.split(", ")[-1].split()
            entry = Option(left[1] if len(left) > 1 else None, "")
            options[left[0].removeprefix("--")] = entry
        elif line.startswith("  -"):
            assert len(line) > 23 and line[22] == " ", f"help's option column overflows: {line!r}"
            left = line[:22].split(", ")[-1].split()
            entry = Option(left[1] if len(left) > 1 else None, line[23:].strip())
            options[left[0].removeprefix("--")] = entry
        elif entry and line.startswith(" " * 23):
            entry.text += " " + line.strip()
        else:
            entry = None
    return options


def help_convert_options():
    line = next(l for l in help_text().splitlines() if "ndingest convert" in l)
    return set(re.findall(r"\[--([a-z-]+)", line))


def readme_options():
    """name -> Option from the table under "## Options": | `--name ARG` | default | meaning |."""
    section = README.read_text().split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    options = {}
    for line in section.splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name, arg in re.findall(r"`--([a-z-]+)(?: ([^`]+))?`", cells[0]):
            options[name] = Option(arg or None, cells[2], cells[1].replace("`", ""))
    return options


def readme_convert_options():
    line = next(l for l in README.read_text().splitlines() if "`ndingest convert [" in l)
    return set(re.findall(r"\[--([a-z-]+)", line))


def roff_text(line):
    """A man page source line as plain text, near enough to find words and defaults."""
    line = line.replace("\\-", "-")
    line = re.sub(r"\\f[BIRP]", "", line)
    if line.startswith("."):
        line = line.split(" ", 1)[1] if " " in line else ""
        line = line.replace('"', "")
    return line


def man_sections():
    sections, name = {}, None
    for line in MAN.read_text().splitlines():
        if line.startswith(".SH "):
            name = line[4:].strip()
            sections[name] = []
        elif name:
            sections[name].append(line)
    return sections


def man_options():
    """name -> Option from .SH OPTIONS: .TP, a heading line (.B or .BI), then the text."""
    options, entry, heading = {}, None, False
    for line in man_sections()["OPTIONS"]:
        if line == ".TP":
            heading = True
        elif heading:
            heading = False
            text = line.replace("\\-", "-")
            names = re.findall(r"--([a-z-]+)", text)
            assert names, f"no option in the man page's heading {line!r}"
            arg = re.search(r'" (\S+)"', text) if line.startswith(".BI ") else None
            entry = Option(arg and arg.group(1), "")
            for n in names:
                options[n] = entry
        elif line.startswith((".PP", ".SH")):
            entry = None
        elif entry is not None:
            entry.text += " " + roff_text(line)
    return options


def man_convert_options():
    text = " ".join(roff_text(l) for l in man_sections()["SYNOPSIS"])
    assert "ndingest convert" in text, text
    return set(re.findall(r"--([a-z-]+)",
                          text.split("ndingest convert", 1)[1].split("ndingest schema", 1)[0]))


def schema_synopses():
    """`ndingest schema ...` as --help, README and the man page's SYNOPSIS write it."""
    help_line = next(l for l in help_text().splitlines() if "ndingest schema" in l)
    readme_line = next(l for l in README.read_text().splitlines() if "`ndingest schema " in l)
    man = " ".join(roff_text(l) for l in man_sections()["SYNOPSIS"]).split("ndingest schema", 1)
    assert len(man) == 2, "the man page's SYNOPSIS has no schema command"
    man[1] = man[1].split("ndingest deliver", 1)[0]  # the command after it
    return [" ".join(("ndingest schema " + x.split("ndingest schema", 1)[-1]).split())
            for x in (help_line, readme_line.split("`")[1], man[1])]


def test_help_parses():
    """The parsers below must see what --help shows, or the comparisons prove nothing."""
    h = help_options()
    assert len(h) > 20, h
    assert h["listen"].arg == "ADDR:PORT" and h["listen"].default == "127.0.0.1:8888", h["listen"]
    assert h["utc"].arg is None and h["utc"].default is None, h["utc"]
    assert h["help"].arg is None, h["help"]
    assert {"columns", "max-line"} <= help_convert_options()


def same_options(doc, where):
    """doc lists the options --help lists, with the same value names; --help's options."""
    h = help_options()
    assert sorted(doc) == sorted(h), f"{where} and --help list different options"
    for name, o in h.items():
        assert doc[name].arg == o.arg, f"--{name}: {where} says {doc[name].arg!r}, --help {o.arg!r}"
    return h


def test_readme_options_match_help():
    r = readme_options()
    for name, o in same_options(r, "README's options table").items():
        if name in ("help", "version"):
            expected = ""
        elif o.arg is None:  # a flag: off unless given
            expected = "off"
        else:
            expected = o.default or "none"
        got = r[name].default.split(" (")[0]
        assert got == expected, f"--{name}: README's default {r[name].default!r}, --help {expected!r}"


def test_man_options_match_help():
    m = man_options()
    for name, o in same_options(m, "the man page's OPTIONS").items():
        assert m[name].default == o.default, \
            f"--{name}: the man page's default {m[name].default!r}, --help {o.default!r}"


def test_convert_options_match_help():
    h = help_convert_options()
    assert readme_convert_options() == h, "README's convert synopsis"
    assert man_convert_options() == h, "the man page's convert synopsis"


def test_schema_synopsis_matches_help():
    h, readme, man = schema_synopses()
    assert h == ("ndingest schema NAME --datasets DIR "
                 "[--clickhouse [--database DB [--cluster NAME]] | --postgres] "
                 "[--clickhouse-compat VERSION]"), h
    assert readme == h, "README's schema synopsis"
    assert man.replace("[ ", "[").replace(" ]", "]") == h, "the man page's schema synopsis"


def test_readme_column_limit():
    """README's "at most N" for --columns is JSON_MAX_COLUMNS."""
    limit = re.search(r"#define JSON_MAX_COLUMNS (\d+)", (ROOT / "src" / "json.h").read_text())
    assert limit, "JSON_MAX_COLUMNS in src/json.h"
    assert f"at most {limit.group(1)})" in readme_options()["columns"].text
