"""JupyterHub for the course: real Linux accounts, a password login, one server per user.

`make hub` (deploy/hub/hub.py) runs JupyterHub with this file on this machine, and
tests/test_hub.py runs a whole class through it. Both pass their settings in COURSE_HUB_*
variables (set by hub.py); without them the defaults below are those of a real server.

On a real server, copy this file to /etc/jupyterhub/jupyterhub_config.py and change what the
"REAL SERVER" comments say. What stays the same: nbgrader's exchange is a folder that every
user's server can read and write (created as nbgrader documents it, see deploy/README.md), and
every user's server runs the course's own Python environment (.venv: JupyterLab, nbgrader's
Assignments tab, torch, the course's helpers and its kernel).
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821  (injected by traitlets when JupyterHub loads this file)

env = os.environ.get
COURSE = Path(env("COURSE_HUB_COURSE", Path(__file__).resolve().parents[2]))
VENV = Path(env("COURSE_HUB_VENV", COURSE / ".venv"))
# STATE/hub: the hub's own files (root only); STATE/jupyter: every user's nbgrader_config.py.
STATE = Path(env("COURSE_HUB_STATE", "/srv/jupyterhub"))
HUB_FILES = STATE / "hub"

# --- where the hub listens ------------------------------------------------------------------
# Locally: 127.0.0.1 and a random free port (hub.py picks it). REAL SERVER: the public address
# and port 443 behind TLS (c.JupyterHub.ssl_cert / ssl_key, or a reverse proxy in front).
c.JupyterHub.ip = env("COURSE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(env("COURSE_HUB_PORT", "8000"))
# The hub's own API and the proxy's API: loopback only, on ports of their own.
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("COURSE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('COURSE_HUB_PROXY_API_PORT', '8001')}"
# configurable-http-proxy from the npm registry, installed by `make hub` into .hub/proxy
# (deploy/hub/package-lock.json pins it). REAL SERVER: the same, or `npm install -g`.
c.ConfigurableHTTPProxy.command = [
    env("COURSE_HUB_PROXY", str(COURSE / ".hub/proxy/node_modules/.bin/configurable-http-proxy"))
]
c.ConfigurableHTTPProxy.pid_file = str(HUB_FILES / "proxy.pid")

# Everything the hub keeps (its database of users and servers, the secret that signs login
# cookies) lives in STATE/hub, so a restarted hub knows every user and server, and nobody logs in
# again.
c.JupyterHub.db_url = f"sqlite:///{HUB_FILES / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_FILES / "jupyterhub_cookie_secret")
# A hub restart (an upgrade, a new setting) must not stop the students' servers and kernels:
# they keep running and the restarted hub finds them again.
c.JupyterHub.cleanup_servers = False

# --- who may log in ---------------------------------------------------------------------------
# JupyterHub's own PAMAuthenticator: the Linux accounts and their passwords (pamela, pinned
# in requirements/instructor.txt). REAL SERVER: the same with your accounts, or your
# university's single sign-on (oauthenticator's GenericOAuthenticator, ldapauthenticator),
# keeping allowed_users (or allowed_groups) as the class list.
c.JupyterHub.authenticator_class = "pam"
# pam_open_session needs a full login stack (systemd-logind); the servers do not need it.
c.PAMAuthenticator.open_sessions = False
users = [u for u in env("COURSE_HUB_USERS", "").split(",") if u]
if users:
    c.Authenticator.allowed_users = set(users)

# --- each user's server -----------------------------------------------------------------------
# LocalProcessSpawner (the default): each user's server is a process of that Linux user, so a
# student's kernel can read only what the student's account can. REAL SERVER: the same on one
# machine; on Kubernetes, KubeSpawner (Zero to JupyterHub) with the exchange on shared storage
# (see docs/instructors.md, "A class on JupyterHub").
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.http_timeout = 90  # seconds: JupyterLab's start on a loaded 2-core machine
c.Spawner.start_timeout = 120
c.Spawner.environment = {
    # The course's Python first: nbgrader, make's targets and the kernel are the .venv's.
    "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    # nbgrader_config.py for every user (the course id and the exchange), from STATE/jupyter.
    # REAL SERVER: put that file in /etc/jupyter/ instead (hub.py shows what it holds).
    "JUPYTER_CONFIG_PATH": str(STATE / "jupyter"),
    # One torch thread per kernel: a classroom machine has more students than cores.
    "OMP_NUM_THREADS": env("COURSE_HUB_OMP_THREADS", "1"),
}
# Students get student tools only: STATE/jupyter-student (hub.py) comes first on their config
# path and turns nbgrader's Formgrader, Create Assignment and course list off. REAL SERVER: the
# instructors' logins here (or an admin group), and the same folder in /etc/jupyter-student.
INSTRUCTORS = {u for u in env("COURSE_HUB_INSTRUCTORS", "").split(",") if u}


def student_tools_only(spawner):
    if spawner.user.name not in INSTRUCTORS:
        path = f"{STATE / 'jupyter-student'}{os.pathsep}{STATE / 'jupyter'}"
        # a new dict: the configured one is shared by every spawner
        spawner.environment = {**spawner.environment, "JUPYTER_CONFIG_PATH": path}


c.Spawner.pre_spawn_hook = student_tools_only
if env("COURSE_FAST"):  # the tests: every training cell runs in seconds
    c.Spawner.environment["COURSE_FAST"] = env("COURSE_FAST")
if env("COURSE_HUB_EXPOSE_APP"):  # the tests: window.jupyterapp, Lab's command registry
    c.Spawner.args = ["--LabApp.expose_app_in_browser=True"]
