"""A fork server for tests that run many short commands (the experiments sweep, tests/test_experiments.py).

Starting Python and importing torch costs seconds per command on 2 cores, more than a --smoke
run itself. The server imports torch and lib/ once; each command forks it, so a command starts
in milliseconds with those modules already loaded and nothing else shared (a fresh fork of the
idle server each time: no state of one command reaches the next).

    server = ForkServer(); server.start()
    env["PYTHON"] = server.client      # an executable that behaves as `python SCRIPT ARGS...`
    ...
    server.stop()

The client passes its stdin/stdout/stderr to the forked command (SCM_RIGHTS), with its argv,
working folder and environment, and exits with the command's exit code. It understands
`python SCRIPT ARGS...` and `python - ARGS...` (the script on stdin), which is all the
experiments scripts use.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "lib.engine", "lib.args", "lib.data",
           "lib.models", "lib.losses", "lib.metrics", "lib.evaluation", "lib.vis")

CLIENT = r'''
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["FORKSERVER_SOCKET"])
msg = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
socket.send_fds(s, [struct.pack(">I", len(msg)) + msg], [0, 1, 2])
data = b""
while len(data) < 4:
    part = s.recv(4 - len(data))
    if not part:
        sys.exit("forkserver: the server went away")
    data += part
sys.exit(struct.unpack(">i", data)[0])
'''


class ForkServer:
    """Start with start(), point PYTHON at .client, stop with stop()."""

    def __init__(self, folder=None):
        self.folder = folder or tempfile.mkdtemp(prefix="forkserver-")
        os.makedirs(self.folder, exist_ok=True)
        self.socket = os.path.join(self.folder, "server.sock")
        self.client = os.path.join(self.folder, "python")
        self.proc = None

    def start(self, timeout=120):
        with open(os.path.join(self.folder, "client.py"), "w") as f:
            f.write(CLIENT)
        with open(self.client, "w") as f:   # -S: the client needs no site-packages
            f.write(f'#!/bin/sh\nexec "{sys.executable}" -S "{self.folder}/client.py" "$@"\n')
        os.chmod(self.client, 0o755)
        if os.path.exists(self.socket):       # left by a server that was stopped
            os.remove(self.socket)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), self.socket], cwd=ROOT)
        deadline = time.time() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the fork server did not start")
            time.sleep(0.05)
        return self

    def env(self, base=None):
        """An environment whose PYTHON is the client."""
        return {**(base or os.environ), "PYTHON": self.client, "FORKSERVER_SOCKET": self.socket}

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def _recv_request(conn):
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = struct.unpack(">I", msg[:4])[0]
    while len(msg) < 4 + size:
        msg += conn.recv(1 << 20)
    return json.loads(msg[4:4 + size]), fds


def _run_command(request, fds):
    """In the forked child: become `python ARGV...` with the client's streams; never returns."""
    code = 1
    try:
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        if not argv:
            raise SystemExit("forkserver: no script given")
        if argv[0] == "-":                      # python - ARGS <<EOF
            sys.argv = argv
            sys.path[0] = ""
            code_text = sys.stdin.read()
            exec(compile(code_text, "<stdin>", "exec"), {"__name__": "__main__"})
        else:
            import runpy
            path = os.path.abspath(argv[0])
            sys.argv = argv
            sys.path[0] = os.path.dirname(path)
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    except BaseException:   # as python would: the traceback on stderr, exit code 1
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path):
    sys.path.insert(0, ROOT)
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path + ".tmp")
    server.listen(16)
    os.rename(path + ".tmp", path)             # the socket appears once it accepts
    while True:
        conn, _ = server.accept()
        request, fds = _recv_request(conn)
        pid = os.fork()
        if pid == 0:
            server.close()
            conn.close()
            _run_command(request, fds)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)          # one command at a time: the scripts are sequential
        code = os.waitstatus_to_exitcode(status)
        conn.sendall(struct.pack(">i", code if code >= 0 else 128 - code))
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
