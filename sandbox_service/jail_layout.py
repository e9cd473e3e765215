"""How the jail's init lays out the new root (namespaces mode) or the plain directory
(none mode), and pivots into it. Standard library only; imported before the pivot."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from sandbox_service.jail_spec import NAMESPACES, REPORTS_DIR, TMP_DIR, WORKSPACE_DIR, Spec

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_COPY_CHUNK = 1024 * 1024


class SetupError(Exception):
    """The jail could not be built; nothing of the tool ran."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(code)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str, *, writable: bool = False, nodev: bool = True) -> None:
    _mount(source, target, None, _MS_BIND)
    flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID
    if nodev:
        flags |= _MS_NODEV
    if not writable:
        flags |= _MS_RDONLY
    _mount(None, target, None, flags)


def inside(root: str, path: str) -> str:
    """Where `path` (absolute in the jail) is under `root`."""
    return os.path.join(root, path.lstrip("/"))


def _mountpoint_for(source: str, target: str) -> None:
    """Creates an empty file or directory at target to bind source onto."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "ab"):
            pass


def _copy_file(source: str, target: str) -> None:
    # Not shutil.copyfile: importing shutil adds about 4 ms to every check's start-up.
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(_COPY_CHUNK):
            dst.write(chunk)


def _copy_workspace(source: str, target: str, uid: int, gid: int) -> None:
    for here, dirs, files in os.walk(source):
        relative = os.path.relpath(here, source)
        destination = target if relative == "." else os.path.join(target, relative)
        for name in dirs:
            path = os.path.join(destination, name)
            os.mkdir(path, 0o755)
            os.chown(path, uid, gid)
        for name in files:
            path = os.path.join(destination, name)
            _copy_file(os.path.join(here, name), path)
            os.chmod(path, 0o644)
            os.chown(path, uid, gid)


def _loopback_up() -> None:
    """Brings up the namespace's own `lo`: tests may serve on 127.0.0.1 among themselves."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        answer = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
        flags = struct.unpack("16sh22x", answer)[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def _pivot(root: str) -> None:
    machine = os.uname().machine
    number = _SYS_PIVOT_ROOT.get(machine)
    if number is None:
        raise SetupError(f"pivot_root: unsupported machine {machine}")
    old = os.path.join(root, ".old-root")
    os.mkdir(old, 0o700)
    _check(_libc.syscall(number, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", _MNT_DETACH), "umount the host's root")
    os.rmdir("/.old-root")


def build_jail(spec: Spec) -> None:
    """Lays out the new root and pivots into it (namespaces mode, as PID 1)."""
    root = spec.root_dir
    limits = spec.limits
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={limits.disk_bytes},mode=755")
    for link, points_to in spec.symlinks.items():
        os.symlink(points_to, inside(root, link))
    for source in spec.read_only_binds:
        target = inside(root, source)
        _mountpoint_for(source, target)
        _bind(source, target)
    for hidden in spec.hidden_dirs:
        # An empty view of site-packages; only the toolchain is bound back in.
        target = inside(root, hidden)
        _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
    for source in [*spec.revealed, *spec.host_files]:
        target = inside(root, source)
        _mountpoint_for(source, target)
        _bind(source, target)
    for hidden in spec.hidden_dirs:
        _mount(None, inside(root, hidden), None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    os.makedirs(inside(root, "dev/shm"), exist_ok=True)
    os.chmod(inside(root, "dev/shm"), 0o1777)
    for device in spec.device_files:
        target = inside(root, device)
        _mountpoint_for(device, target)
        _bind(device, target, writable=True, nodev=False)
    for name, points_to in {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
    }.items():
        os.symlink(points_to, inside(root, f"dev/{name}"))
    os.makedirs(inside(root, "proc"), exist_ok=True)
    _mount("proc", inside(root, "proc"), "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    lay_out(spec, root)
    _loopback_up()
    socket.sethostname("sandbox")
    _pivot(root)


def lay_out(spec: Spec, root: str) -> None:
    """The workspace, reports, /tmp and our own files; shared by both modes."""
    for path, content in spec.files.items():
        target = inside(root, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as out:
            out.write(content)
        os.chmod(target, 0o644)
    for directory in (WORKSPACE_DIR, REPORTS_DIR):
        path = inside(root, directory)
        os.makedirs(path, 0o755, exist_ok=True)
        if directory == REPORTS_DIR and spec.mode == NAMESPACES:
            # Room of their own: code that fills the disk still gets its results read.
            size = 2 * spec.limits.report_bytes + 1024 * 1024
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={size},mode=755")
        os.chown(path, spec.uid, spec.gid)
    tmp = inside(root, TMP_DIR)
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)
    _copy_workspace(spec.input_dir, inside(root, WORKSPACE_DIR), spec.uid, spec.gid)
