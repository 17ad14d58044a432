"""paramiko, the SSH library of Ansible and many scripts, as a Postern client.

Called by paramiko.rs with one JSON argument. Modes:
- "agent": through `postern proxy` to an agent's SSH server: a plain key first (refused),
  then the key with its certificate on the same connection (paramiko asks for the
  ssh-userauth service again before each attempt); then a command with its output and exit
  status, a PTY shell, and an SFTP upload and download.
- "gateway": straight to the server's agent gateway: two keys on one connection, the first
  refused (a revoked agent's), the second accepted.
- "download": through `postern proxy`, runs a command with a 1 GiB channel window (a client
  that lets much more be in flight than OpenSSH's 2 MiB), prints "flowing" once its first
  byte arrived (the test may stop this process then), and counts the output to its end.
Prints one JSON object with what happened; exits non-zero on anything unexpected.
"""

import json
import socket
import sys

import paramiko

TIMEOUT = 20


def read_all(chan):
    """Reads stdout and stderr to their end (outputs here are small), then the exit status."""
    out = chan.makefile("rb").read()
    err = chan.makefile_stderr("rb").read()
    return out, err, chan.recv_exit_status()


def refused(transport, login, key):
    try:
        transport.auth_publickey(login, key)
    except paramiko.AuthenticationException:
        return True
    return False


def agent(cfg):
    result = {}
    transport = paramiko.Transport(paramiko.ProxyCommand(cfg["proxy"]))
    transport.start_client(timeout=TIMEOUT)
    result["host_key_matches"] = transport.get_remote_server_key().get_base64() == cfg["host_key"]
    transport.auth_timeout = TIMEOUT

    plain = paramiko.Ed25519Key.from_private_key_file(cfg["key"])
    result["plain_key_refused"] = refused(transport, cfg["login"], plain)
    certified = paramiko.Ed25519Key.from_private_key_file(cfg["key"])
    certified.load_certificate(cfg["cert"])
    transport.auth_publickey(cfg["login"], certified)
    result["authenticated"] = transport.is_authenticated()

    chan = transport.open_session(timeout=TIMEOUT)
    chan.settimeout(TIMEOUT)
    chan.exec_command("echo out-from-device; echo err-from-device >&2; exit 7")
    out, err, status = read_all(chan)
    result["exec"] = {"out": out.decode(), "err": err.decode(), "status": status}

    chan = transport.open_session(timeout=TIMEOUT)
    chan.settimeout(TIMEOUT)
    chan.get_pty(term="xterm-256color", width=100, height=30)
    chan.invoke_shell()
    chan.sendall(b"echo TERM=$TERM; stty size; tty; exit 5\n")
    out, _, status = read_all(chan)
    result["shell"] = {"out": out.decode(errors="replace"), "status": status}

    sftp = paramiko.SFTPClient.from_transport(transport)
    sftp.get_channel().settimeout(TIMEOUT)
    sftp.put(cfg["upload"], cfg["remote"])
    sftp.get(cfg["remote"], cfg["download"])
    result["sftp_remote_size"] = sftp.stat(cfg["remote"]).st_size
    sftp.close()
    transport.close()
    return result


def gateway(cfg):
    sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=TIMEOUT)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=TIMEOUT)
    transport.auth_timeout = TIMEOUT
    revoked = paramiko.Ed25519Key.from_private_key_file(cfg["revoked_key"])
    fresh = paramiko.Ed25519Key.from_private_key_file(cfg["fresh_key"])
    result = {"revoked_key_refused": refused(transport, "postern-agent", revoked)}
    transport.auth_publickey("postern-agent", fresh)
    result["authenticated"] = transport.is_authenticated()
    transport.close()
    return result


def download(cfg):
    transport = paramiko.Transport(paramiko.ProxyCommand(cfg["proxy"]))
    transport.start_client(timeout=TIMEOUT)
    transport.auth_timeout = TIMEOUT
    key = paramiko.Ed25519Key.from_private_key_file(cfg["key"])
    key.load_certificate(cfg["cert"])
    transport.auth_publickey(cfg["login"], key)
    chan = transport.open_session(window_size=1 << 30, timeout=TIMEOUT)
    chan.exec_command(cfg["command"])
    received = len(chan.recv(1))
    print("flowing", flush=True)
    while True:
        data = chan.recv(1 << 16)
        if not data:
            break
        received += len(data)
    result = {"received": received, "status": chan.recv_exit_status()}
    transport.close()
    return result


def main():
    cfg = json.loads(sys.argv[1])
    result = {"agent": agent, "gateway": gateway, "download": download}[cfg["mode"]](cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
