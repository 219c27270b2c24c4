"""The local Hub server's data folder and command line: one server per folder (M5), debris cleared at start (L10),
tokens kept off the command line and start-up errors as one line (L14), a start without torch and a quick exit (L17).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_zoo.hub.server import DataDirError, HubServer, parse_tokens
from hybrid_zoo_cli.hub_server import build_parser, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def whoami(port: int, token: str) -> dict:
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.request('GET', '/api/whoami-v2', headers={'Authorization': f'Bearer {token}'})
    reply = json.loads(conn.getresponse().read())
    conn.close()
    return reply


def start_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """``python -m hybrid_zoo_cli.hub_server ARGS``, returned once its banner is out."""
    cmd = [sys.executable, '-m', 'hybrid_zoo_cli.hub_server', *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    banner = proc.stdout.readline()
    assert banner.startswith('Hub server on'), banner + proc.stdout.read()
    return proc


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# ---- M5: one server per data folder --------------------------------------------------------------------
def test_a_second_server_on_one_data_dir_refuses_to_start(tmp_path, capsys):
    with HubServer(tmp_path):
        with pytest.raises(Exception, match='in use by another hub server'):
            HubServer(tmp_path)
    with HubServer(tmp_path):  # the folder is free again once the first one stops
        pass

    port = free_port()
    proc = start_cli(['--port', str(port), '--data-dir', str(tmp_path)])  # another process holds it
    try:
        code, err = run_main(['--port', '0', '--data-dir', str(tmp_path)], capsys)
        assert code == 2 and err.count('\n') == 1 and 'in use by another hub server' in err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def delete_top_level_files(data_dir) -> None:
    """What a careless clean-up does: every plain file directly in the data folder goes, lock files included."""
    for path in data_dir.iterdir():
        if path.is_file():
            path.unlink()


def test_deleting_files_cannot_release_the_data_dir(tmp_path, capsys):
    """The lock is the operating system's, on the folder itself: no file deletion lets a second server in."""
    with HubServer(tmp_path):
        delete_top_level_files(tmp_path)
        with pytest.raises(DataDirError, match='in use by another hub server'):
            HubServer(tmp_path)
        with pytest.raises(DataDirError, match='in use by another hub server'):
            HubServer(tmp_path / '.' / 'objects' / '..')  # another spelling of the same folder
        (tmp_path.parent / f'{tmp_path.name}-link').symlink_to(tmp_path)
        with pytest.raises(DataDirError, match='in use by another hub server'):
            HubServer(tmp_path.parent / f'{tmp_path.name}-link')

    proc = start_cli(['--port', str(free_port()), '--data-dir', str(tmp_path)])  # another process holds it
    try:
        delete_top_level_files(tmp_path)
        code, err = run_main(['--port', '0', '--data-dir', str(tmp_path)], capsys)
        assert code == 2 and err.count('\n') == 1 and 'in use by another hub server' in err, err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_a_lock_left_by_a_dead_server_does_not_block(tmp_path):
    proc = start_cli(['--port', str(free_port()), '--data-dir', str(tmp_path)])
    proc.kill()  # SIGKILL: no clean-up at all
    proc.communicate(timeout=10)
    # what older servers left: a lock file naming a process long gone; it is not ours to delete
    (tmp_path / 'lock').write_text('12345\n')
    with HubServer(tmp_path, tokens={'tok': 'alice'}) as hub:
        assert whoami(int(hub.address.rsplit(':', 1)[1]), 'tok')['name'] == 'alice'
    assert (tmp_path / 'lock').read_text() == '12345\n'


# ---- L10: debris of a killed server ----------------------------------------------------------------------
def test_debris_is_cleared_at_start(tmp_path):
    with HubServer(tmp_path, tokens={'tok': 'alice'}) as hub:
        conn = http.client.HTTPConnection(*hub.address.split(':'), timeout=10)
        conn.request('POST', '/api/repos/create', json.dumps({'name': 'kept'}), {'Authorization': 'Bearer tok'})
        assert conn.getresponse().status == 200
        conn.close()
    kept = tmp_path / 'repos' / 'models' / 'alice' / 'kept'
    (tmp_path / 'objects' / 'tmp' / 'partial-upload').write_bytes(b'x' * 1000)  # a PUT cut by SIGKILL
    (tmp_path / 'repos' / 'models' / 'alice' / 'half').mkdir()  # a create cut before repo.json
    (kept / '.refs.json.abc123').write_text('{')  # an atomic write cut before its rename
    with HubServer(tmp_path) as hub:
        assert list((tmp_path / 'objects' / 'tmp').iterdir()) == []
        assert not (tmp_path / 'repos' / 'models' / 'alice' / 'half').exists()
        assert sorted(p.name for p in kept.iterdir()) == ['commits', 'refs.json', 'repo.json']
        assert hub.store.repo_meta('model', 'alice/kept') is not None


# ---- L14: tokens and start-up errors ----------------------------------------------------------------------
def test_a_token_given_twice_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="both 'alice' and 'bob'") as e:
        parse_tokens(['alice:dup', 'bob:dup'])
    assert 'dup' not in str(e.value).replace("'", ' ').split()
    code, err = run_main(['--data-dir', str(tmp_path), '--token', 'alice:dup', '--token', 'bob:dup'], capsys)
    assert code == 2 and err.count('\n') == 1 and "both 'alice' and 'bob'" in err and ':dup' not in err


def test_tokens_from_a_file_and_the_environment(tmp_path):
    token_file = tmp_path / 'tokens.txt'
    token_file.write_text('# users of the demo\nalice:hf_file_alice\n\ncarol:hf_file_carol:read\n')
    port = free_port()
    env = dict(os.environ, HZ_HUB_TOKENS='bob:hf_env_bob, dave:hf_env_dave:read')
    proc = start_cli(['--port', str(port), '--data-dir', str(tmp_path / 'data'), '--token-file', str(token_file)], env)
    try:
        cmdline = open(f'/proc/{proc.pid}/cmdline', 'rb').read()
        assert b'hf_file' not in cmdline and b'hf_env' not in cmdline  # nothing secret in `ps`
        assert whoami(port, 'hf_file_alice')['name'] == 'alice'
        assert whoami(port, 'hf_env_bob')['name'] == 'bob'
        assert whoami(port, 'hf_file_carol')['auth']['accessToken']['role'] == 'read'
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert 'hf_file' not in out and 'hf_env' not in out


@pytest.mark.parametrize('problem', ['data dir is a file', 'port in use', 'token file missing', 'bad token spec'])
def test_start_up_errors_are_one_line_and_exit_2(tmp_path, capsys, problem):
    argv = ['--port', '0', '--data-dir', str(tmp_path / 'data')]
    expected = {
        'data dir is a file': 'must be a folder',
        'port in use': 'Address already in use',
        'token file missing': 'cannot be read',
        'bad token spec': 'expects USER:TOKEN',
    }[problem]
    busy = socket.socket()
    if problem == 'data dir is a file':
        (tmp_path / 'data').write_text('not a folder')
    elif problem == 'port in use':
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        argv[1] = str(busy.getsockname()[1])
    elif problem == 'token file missing':
        argv += ['--token-file', str(tmp_path / 'missing.txt')]
    else:
        argv += ['--token', 'no-colon']
    with busy:
        code, err = run_main(argv, capsys)
    assert code == 2 and err.count('\n') == 1 and expected in err, err
    assert 'Traceback' not in err


# tmp_path is shared by the examples: each one checks that nothing was created in it
@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    port=st.one_of(
        st.integers(), st.integers(-3, 3), st.integers(65533, 65538), st.integers(-(2**70), 2**70), st.floats()
    )
)
def test_the_port_is_checked_before_anything_binds(port, tmp_path):
    """Every integer from 0 to 65535 is a port (0: any free one); anything else is a one-line error, exit 2."""
    text, data_dir = str(port), str(tmp_path / 'data')
    if isinstance(port, int) and 0 <= port <= 65535:
        assert build_parser().parse_args([f'--port={text}', '--data-dir', data_dir]).port == port
        return
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main([f'--port={text}', '--data-dir', data_dir])
    assert exit_.value.code == 2
    assert f"expected an integer from 0 (any free port) to 65535, got '{text}'" in err.getvalue()
    with pytest.raises(ValueError, match='expected an integer from 0'):
        HubServer(data_dir, port=port)
    assert not os.path.exists(data_dir)  # refused before the data folder is touched


@pytest.mark.parametrize('port', ['70000', '-1'])
def test_a_port_out_of_range_is_a_usage_error_without_traceback(tmp_path, port):
    cmd = [sys.executable, '-m', 'hybrid_zoo_cli.hub_server', '--port', port, '--data-dir', str(tmp_path / 'data')]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert f"--port: expected an integer from 0 (any free port) to 65535, got '{port}'" in done.stderr
    assert not (tmp_path / 'data').exists()


# ---- L17: a light server ---------------------------------------------------------------------------------
def test_the_cli_server_runs_without_torch_and_exits_at_once(tmp_path):
    probe = 'import sys, hybrid_zoo_cli.hub_server as c; c.load_server(); print(sorted({"torch", "timm", "hybrid_zoo"} & set(sys.modules)))'
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'

    port = free_port()
    proc = start_cli(['--port', str(port), '--data-dir', str(tmp_path)], dict(os.environ, HZ_HUB_TOKENS='alice:tok'))
    assert whoami(port, 'tok')['name'] == 'alice'
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0 and time.monotonic() - start < 2
