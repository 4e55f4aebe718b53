"""Attacks on the sandbox itself (issue 22): what the kernel can see of the host, its socket
folder, and the memory of the whole kernel. Rows of lesson 01's corpus (see generate.py)."""

from __future__ import annotations

from support.hostile.generate import (
    PATHS,
    Row,
    after,
    before,
    cell_fails,
    chain,
    from_on,
    unanswered,
)

#: Everything the kernel can see outside the folders it is meant to read (the system, the
#: interpreter, the course's helpers package, its own working copy and /tmp): the
#: test checks that what is left is only the skeleton of those folders.
HOST_VIEW = (
    PATHS
    + """
import os as _os, sys as _sys, json as _json
_skip = {"/usr", "/proc", "/sys", "/dev", _os.getcwd()}
_skip |= {_os.path.realpath(_sys.prefix), _os.path.realpath(_sys.base_prefix)}
_skip |= {str(_repo / "helpers")}
_seen = []
for _top, _dirs, _files in _os.walk("/"):
    _dirs[:] = [_d for _d in _dirs if _os.path.join(_top, _d) not in _skip]
    _seen += [_os.path.join(_top, _n) for _n in _dirs + _files]
    if len(_seen) > 5000:
        break
_view = {
    "seen": sorted(_seen),
    "repo": sorted(_os.listdir(_repo)),
    "cwd": _os.getcwd(),
    "uid": _os.getuid(),
}
for _name in ("/root", "/home", "/work", "/opt", "/srv", "/mnt"):
    try:
        _view[_name] = sorted(_os.listdir(_name))
    except OSError as _exc:
        _view[_name] = type(_exc).__name__
print("SANDBOX_VIEW " + _json.dumps(_view, sort_keys=True))
"""
)

#: rnn_cell left blank; the solution looked for anywhere on the machine (another checkout of the
#: course, a home folder, the work tree) and executed when found.
STEAL_ANYWHERE = """
import os as _os, json as _json
_found = None
_here = _os.getcwd()  # the student's own notebook is not a solution
for _top, _dirs, _files in _os.walk("/"):
    _dirs[:] = [
        _d for _d in _dirs if _os.path.join(_top, _d) not in ("/proc", "/sys", "/dev", _here)
    ]
    if _os.path.basename(_top) == "solutions" or "01_intro_to_rnns.ipynb" in _files:
        _path = _os.path.join(_top, "01_intro_to_rnns.ipynb")
        try:
            _text = open(_path).read()
        except OSError:
            continue
        if "BEGIN SOLUTION" in _text:
            _found = _path
            break
if _found:
    print("READ", _found)
    for _c in _json.loads(_text)["cells"]:
        if "def rnn_cell" in "".join(_c["source"]):
            exec("".join(_c["source"]))
else:
    print("no solutions anywhere")
"""

#: The kernel's socket folder: filled, squatted on (the socket names of later kernels taken) and
#: made unreadable (its own sockets are left alone: they are already connected). A folder shared
#: with the next kernel of the job would break that kernel.
SOCKET_VANDAL = """
import os as _os, json as _json, stat as _stat
from ipykernel.connect import get_connection_file as _gcf
_info = _json.load(open(_gcf()))
_dir = _os.path.dirname(_info["ip"])
_done = []
_squatted = 0
for _n in range(1, 400):
    if not _os.path.exists(f"{_info['ip']}-{_n}"):
        try:
            open(f"{_info['ip']}-{_n}", "a").close()
            _squatted += 1
        except OSError:
            pass
_done.append(f"squatted {_squatted}")
try:
    for _n in range(10000):
        with open(_os.path.join(_dir, f"fill{_n}"), "wb") as _fh:
            _fh.write(b"x" * 2**20)
    _done.append("filled")
except OSError as _exc:
    _done.append(f"fill stopped {type(_exc).__name__}")
for _n in range(10000):
    try:
        _os.unlink(_os.path.join(_dir, f"fill{_n}"))
    except OSError:
        break
try:
    _os.chmod(_dir, 0)
    _done.append("chmod 0")
except OSError as _exc:
    _done.append(f"chmod refused {type(_exc).__name__}")
print("SOCKETS", _dir, _done)
"""

#: Several processes that together hold more than the kernel's memory limit, each under its own
#: address-space limit (torch alone maps about 1.4 GB of the corpus's 2 GB).
FORK_MEMORY = """
import os as _os, time as _time
_kids = []
for _i in range(4):
    _pid = _os.fork()
    if _pid == 0:
        try:
            _block = b"\\x01" * (550 * 2**20)
            _time.sleep(60)
        finally:
            _os._exit(0)
    _kids.append(_pid)
for _pid in _kids:
    _os.waitpid(_pid, 0)
"""

ROWS: list[Row] = [
    Row(
        "sandbox_view",
        "tampering",
        "walks the whole file system: only the interpreter, the system and the course's "
        "helpers, data, images and lessons may be there",
        after("gru_quiz", HOST_VIEW),
        outputs={"gru_quiz": "SANDBOX_VIEW"},
        needs_sandbox=True,
    ),
    Row(
        "steal_anywhere",
        "tampering",
        "rnn_cell left blank, a solution looked for anywhere on the machine (other checkouts, "
        "home folders, the work tree)",
        chain(unanswered("rnn_cell"), after("rnn_cell", STEAL_ANYWHERE)),
        lost=cell_fails(),
        outputs={"rnn_cell": "no solutions anywhere"},
        absent={"rnn_cell": "READ"},
        needs_sandbox=True,
    ),
    Row(
        "socket_vandal",
        "tampering",
        "fills its socket folder, squats on the next socket names and chmods it all to 0",
        after("gru_quiz", SOCKET_VANDAL),
        outputs={"gru_quiz": "SOCKETS"},
        needs_sandbox=True,
        repeat=True,
    ),
    Row(
        "fork_memory",
        "resources",
        "four processes of 550 MB each (2.2 GB together, each under the 2 GB address-space "
        "limit) before rnn_cell is defined",
        before("rnn_cell", FORK_MEMORY),
        lost=from_on("rnn_cell_check", "memory"),
        needs_sandbox=True,
        repeat=True,
    ),
]
