"""The WikiText-2 downloader, against a small HTTP server on 127.0.0.1."""

import hashlib
import http.server
import socket
import threading

import pytest

GOOD = b" = Heading = \n the first line of text . \n" * 200
SHA = hashlib.sha256(GOOD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    seen_while_sending = []  # for /slow/: did the destination file exist half-way through?
    destination = None

    def do_GET(self):
        kind = self.path.split("/")[1]
        if kind == "missing":
            self.send_error(404)
            return
        body = GOOD if kind in ("good", "slow") else GOOD[:-10] + b"tampered!\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "cut":  # promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if kind == "slow":
            Handler.seen_while_sending.append(Handler.destination.exists())
        self.wfile.write(body[half:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture()
def refused_url():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{{name}}"


def fetch(nb, folder, *urls):
    return nb.download_wikitext2(
        folder, urls=list(urls), files={"train.txt": SHA}, progressbar=False
    )


def test_good_download_lands_in_place(nb, server, tmp_path):
    fetch(nb, tmp_path, server + "/good/{name}")
    assert (tmp_path / "train.txt").read_bytes() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]


def test_download_goes_to_a_temporary_file_first(nb, server, tmp_path):
    Handler.destination, Handler.seen_while_sending = tmp_path / "train.txt", []
    fetch(nb, tmp_path, server + "/slow/{name}")
    assert Handler.seen_while_sending == [False]  # half-way, train.txt did not exist yet
    assert (tmp_path / "train.txt").read_bytes() == GOOD


def test_wrong_checksum_is_rejected_and_nothing_is_kept(nb, server, tmp_path):
    with pytest.raises(ConnectionError, match="(?i)hash"):
        fetch(nb, tmp_path, server + "/tampered/{name}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("first", ["/missing/{name}", "/cut/{name}", "/tampered/{name}", "refused"])
def test_a_failing_source_falls_through_to_the_next(nb, server, tmp_path, refused_url, first):
    fetch(
        nb, tmp_path, refused_url if first == "refused" else server + first, server + "/good/{name}"
    )
    assert (tmp_path / "train.txt").read_bytes() == GOOD


def test_all_sources_failing_names_each_and_the_fix(nb, server, tmp_path, refused_url):
    with pytest.raises(ConnectionError) as error:
        fetch(nb, tmp_path, server + "/missing/{name}", refused_url, server + "/cut/{name}")
    message = str(error.value)
    assert (
        "404" in message and "/cut/" in message and refused_url.format(name="train.txt") in message
    )
    assert "WIKITEXT2_DIR" in message
    assert list(tmp_path.iterdir()) == []  # the interrupted transfer left no partial file


def test_a_damaged_file_on_disk_is_named_with_the_fix(nb, tmp_path):
    (tmp_path / "train.txt").write_bytes(GOOD[:100])  # truncated
    with pytest.raises(nb.DataIntegrityError, match=r"train\.txt is damaged.*Delete this file"):
        fetch(nb, tmp_path, "http://127.0.0.1:9/{name}")


def test_a_good_file_on_disk_is_not_downloaded_again(nb, tmp_path, refused_url):
    (tmp_path / "train.txt").write_bytes(GOOD)
    fetch(nb, tmp_path, refused_url)  # would fail if it tried the network
