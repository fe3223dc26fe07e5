"""Corpus, vocabulary, batches, the counting baselines and the checked download."""

import hashlib
import http.server
import math
import socket
import threading
from collections import Counter

import pytest
import torch

from conftest import TINY_CORPUS, real_data_dir


def test_every_line_ends_with_eos(nb, tiny_corpus):
    lines = (TINY_CORPUS / "train.txt").read_text(encoding="utf-8").splitlines()
    assert tiny_corpus["train"].count("<eos>") == len(lines)
    assert tiny_corpus["train"][: len(lines[0].split()) + 1] == [*lines[0].split(), "<eos>"]


def test_vocabulary_counts_from_the_most_frequent(nb, tiny_corpus, tiny_vocab):
    counts = Counter(tiny_corpus["train"])
    frequencies = [counts[token] for token in tiny_vocab.itos]
    assert frequencies == sorted(frequencies, reverse=True)
    assert tiny_vocab.decode(tiny_vocab.encode(["the", "zebra"])) == ["the", "<unk>"]
    built = nb.Vocabulary.build(["a", "b", "a"])  # a custom corpus without <eos>, <unk>
    assert built.itos == ["a", "b", "<eos>", "<unk>"]
    with pytest.raises(ValueError, match="once"):
        nb.Vocabulary(["a", "a", "<eos>", "<unk>"])


def test_batchify_and_get_batch(nb):
    data = nb.batchify(list(range(26)), 4)  # 24 ids fit: rows of 6
    assert data.tolist()[1] == [6, 7, 8, 9, 10, 11]
    inputs, targets = nb.get_batch(data, 0, 4)
    assert inputs.tolist()[0] == [0, 1, 2, 3] and targets.tolist()[0] == [1, 2, 3, 4]
    inputs, targets = nb.get_batch(data, 4, 4)  # only one step is left
    assert inputs.tolist()[0] == [4] and targets.tolist()[0] == [5]
    with pytest.raises(ValueError, match="too few"):
        nb.batchify([1, 2, 3], 2)


def test_custom_corpus_errors_say_what_to_do(nb, tmp_path):
    (tmp_path / "train.txt").write_text("some words\n")
    with pytest.raises(ValueError, match="valid.txt, test.txt"):
        nb.load_corpus(tmp_path, custom=True)
    (tmp_path / "valid.txt").write_text("")
    (tmp_path / "test.txt").write_text("more words\n")
    with pytest.raises(ValueError, match="no text"):
        nb.load_corpus(tmp_path, custom=True)


def test_unigram_and_bigram_baselines(nb):
    train = torch.tensor([0, 1, 0, 1, 0, 2])  # counts 3, 2, 1
    unigram = nb.unigram_probs(train, 3)
    assert unigram.tolist() == pytest.approx([4 / 9, 3 / 9, 2 / 9])  # add-one: counts 4, 3, 2
    valid = torch.tensor([0, 1, 2])
    # lambda 0 is the unigram model of the words after the first
    assert nb.bigram_perplexity(train, valid, 3, 0.0) == pytest.approx(
        math.exp(-(math.log(3 / 9) + math.log(2 / 9)) / 2)
    )
    # by hand: p(1|0) = 2/3 and p(2|1) = 0 (never seen), each mixed with the unigram
    p1, p2 = 0.5 * 2 / 3 + 0.5 * 3 / 9, 0.5 * 0 + 0.5 * 2 / 9
    assert nb.bigram_perplexity(train, valid, 3, 0.5) == pytest.approx(
        math.exp(-(math.log(p1) + math.log(p2)) / 2)
    )


@pytest.mark.skipif(real_data_dir() is None, reason="WikiText-2 not here (set WIKITEXT2_DIR)")
def test_real_wikitext2_sizes_and_baselines(nb):
    corpus = nb.load_corpus(real_data_dir())
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [2_088_628, 217_646, 245_569]
    vocab = nb.Vocabulary.build(corpus["train"])
    assert len(vocab) == 33_278 and vocab.encode(corpus["valid"]).count(vocab.unk_id) > 0
    train, valid = (torch.tensor(vocab.encode(corpus[s])) for s in ("train", "valid"))
    unigram = math.exp(-nb.unigram_probs(train, len(vocab))[valid].log().mean().item())
    bigram = nb.bigram_perplexity(train, valid, len(vocab), 0.7)
    assert 900 < unigram < 1_050 and 300 < bigram < 350  # counting words, then pairs of words


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
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if kind == "slow":
            Handler.seen_while_sending.append(Handler.destination.exists())
        self.wfile.write(body[len(body) // 2 :])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture()
def refused_url():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{{name}}"


def fetch(nb, folder, *urls):
    nb.download_wikitext2(folder, urls=list(urls), files={"train.txt": SHA})


def test_download_lands_whole_and_only_when_complete(nb, server, tmp_path):
    Handler.destination, Handler.seen_while_sending = tmp_path / "train.txt", []
    fetch(nb, tmp_path, server + "/slow/{name}")
    assert Handler.seen_while_sending == [False]  # half-way, train.txt did not exist yet
    assert (tmp_path / "train.txt").read_bytes() == GOOD


@pytest.mark.parametrize("first", ["/missing/{name}", "/cut/{name}", "/tampered/{name}", "refused"])
def test_a_failing_source_falls_through_to_the_next(nb, server, tmp_path, refused_url, first):
    fetch(
        nb, tmp_path, refused_url if first == "refused" else server + first, server + "/good/{name}"
    )
    assert (tmp_path / "train.txt").read_bytes() == GOOD


def test_all_sources_failing_names_each_and_the_fix(nb, server, tmp_path, refused_url):
    with pytest.raises(ConnectionError) as error:
        fetch(nb, tmp_path, server + "/missing/{name}", refused_url, server + "/tampered/{name}")
    message = str(error.value)
    assert "404" in message and refused_url.format(name="train.txt") in message
    assert "hash" in message.lower() and "DATA_DIR" in message and "Could not download" in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_a_file_that_is_not_wikitext2_is_named_and_never_replaced(nb, server, tmp_path):
    (tmp_path / "train.txt").write_bytes(GOOD[:100])  # truncated, or someone's own text
    with pytest.raises(ValueError, match=r"train\.txt is not WikiText-2's.*CUSTOM_CORPUS"):
        fetch(nb, tmp_path, server + "/good/{name}")  # a good source is there: still not replaced
    assert (tmp_path / "train.txt").read_bytes() == GOOD[:100]  # nothing is lost


def test_a_good_file_on_disk_is_used_without_the_network(nb, tmp_path, refused_url):
    (tmp_path / "train.txt").write_bytes(GOOD)
    fetch(nb, tmp_path, refused_url)  # raises if it tried the network
    assert (tmp_path / "train.txt").read_bytes() == GOOD
