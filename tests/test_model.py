"""The model: shapes, initialisation, the loss, evaluation."""

import math

import pytest
import torch

from conftest import train_a_few_steps


def test_forward_shapes(nb, tiny_model):
    ids = torch.randint(0, tiny_model.config["vocab_size"], (3, 7))  # (batch, seq)
    logits, (h, c) = tiny_model(ids)
    assert logits.shape == (3, 7, tiny_model.config["vocab_size"])
    assert h.shape == c.shape == (2, 3, 24)
    logits2, _ = tiny_model(ids[:, :1], (h, c))  # continuing from a state
    assert logits2.shape == (3, 1, tiny_model.config["vocab_size"])


def test_initialisation_xavier_orthogonal_zero_bias(nb, tiny_model):
    hidden = 24
    for layer in range(2):
        w_hh = getattr(tiny_model.lstm, f"weight_hh_l{layer}").detach()
        for gate in w_hh.chunk(4, 0):  # each gate's block is orthogonal
            assert torch.allclose(gate @ gate.T, torch.eye(hidden), atol=1e-5)
        w_ih = getattr(tiny_model.lstm, f"weight_ih_l{layer}").detach()
        fan_in = w_ih.size(1)
        bound = math.sqrt(6 / (fan_in + hidden))  # Xavier-uniform bound, per gate block
        assert w_ih.abs().max() <= bound + 1e-6 and w_ih.abs().max() > 0.8 * bound
        for name in (f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
            assert getattr(tiny_model.lstm, name).abs().max() == 0


def test_tied_weights_share_one_matrix(nb):
    model = nb.LSTMLanguageModel(40, embedding_dim=16, hidden_dim=16, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    with pytest.raises(ValueError, match="tie_weights"):
        nb.LSTMLanguageModel(40, embedding_dim=16, hidden_dim=24, tie_weights=True)
    projected = nb.LSTMLanguageModel(
        40, embedding_dim=16, hidden_dim=32, proj_size=16, tie_weights=True
    )
    assert projected(torch.zeros(2, 3, dtype=torch.long))[0].shape == (2, 3, 40)


def test_bad_dropout_is_refused(nb):
    with pytest.raises(ValueError, match="dropout"):
        nb.LSTMLanguageModel(40, dropout=1.0)


@pytest.mark.parametrize("adaptive, tied", [(None, False), ([10, 30], False), ([10, 30], True)])
def test_loss_equals_cross_entropy_of_forward(nb, adaptive, tied):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(
        60, embedding_dim=16, hidden_dim=16, adaptive_cutoffs=adaptive, tie_weights=tied
    ).eval()
    ids = torch.randint(0, 60, (2, 9))
    logits, _ = model(ids[:, :-1])  # (2, 8, 60)
    if adaptive:  # the adaptive softmax returns log-probabilities: a distribution over all 60 words
        assert torch.allclose(logits.exp().sum(-1), torch.ones(2, 8), atol=1e-5)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 60), ids[:, 1:].reshape(-1))
    loss, _ = model.loss(ids[:, :-1], ids[:, 1:])
    assert torch.allclose(loss, expected, atol=1e-5)


def test_evaluate_does_not_depend_on_bptt(nb, tiny_model, tiny_corpus, tiny_vocab):
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 3)
    losses = [nb.evaluate(tiny_model, data, bptt) for bptt in (7, 400)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0] == pytest.approx(
        math.log(len(tiny_vocab)), rel=0.1
    )  # untrained: about uniform


def test_evaluate_matches_a_by_hand_computation(nb, tiny_model, tiny_vocab, tiny_corpus):
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["valid"]), 2)
    with torch.no_grad():
        tiny_model.eval()
        logits, _ = tiny_model(data[:, :-1])  # the whole row in one window
        by_hand = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), data[:, 1:].reshape(-1)
        )
    assert nb.evaluate(tiny_model, data, 5) == pytest.approx(by_hand.item(), abs=1e-5)


def test_evaluate_rejects_bad_arguments(nb, tiny_model):
    with pytest.raises(ValueError, match="bptt"):
        nb.evaluate(tiny_model, torch.zeros(2, 10, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="batchified"):
        nb.evaluate(tiny_model, torch.zeros(10, dtype=torch.long), 5)


def test_training_lowers_the_loss(nb, trained_tiny, tiny_vocab, tiny_corpus):
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 4)
    assert nb.evaluate(trained_tiny, data, 20) < 0.7 * math.log(len(tiny_vocab))


def test_cosine_schedule(nb):
    assert nb.cosine_lr_scale(0.0, 0.1, 0.05) == 0.0
    assert nb.cosine_lr_scale(0.1, 0.1, 0.05) == pytest.approx(1.0)
    assert nb.cosine_lr_scale(1.0, 0.1, 0.05) == pytest.approx(0.05)
    assert nb.cosine_lr_scale(0.55, 0.1, 0.05) == pytest.approx(0.525)


def test_flop_count_of_a_full_softmax_model(nb):
    model = nb.LSTMLanguageModel(100, embedding_dim=10, hidden_dim=20, num_layers=2)
    lstm = 2 * 4 * 20 * (10 + 20) + 2 * 4 * 20 * (20 + 20)
    assert nb.forward_flops_per_token(model) == lstm + 2 * 20 * 100


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu", "full", "pytorch_examples"])
def test_every_preset_builds_and_trains(nb, preset, tiny_vocab, tiny_corpus, tmp_path):
    """Each preset's model and optimiser (projection, tying, embedding dropout, bf16, SGD ...)
    runs a few steps."""
    config = nb.resolve_preset(preset, torch.device("cpu"))
    state = train_a_few_steps(nb, config, tiny_vocab, tiny_corpus, tmp_path)
    assert state["step"] == 3 and math.isfinite(state["best_val_loss"])
    assert state["best_val_loss"] < math.log(len(tiny_vocab)) + 1


def test_build_model_drops_cluster_boundaries_beyond_a_small_vocabulary(nb):
    config = nb.resolve_preset("cpu", torch.device("cpu"))  # cutoffs [1000, 8000]
    assert nb.build_model(config, 5000).decoder.cutoffs == [
        1000,
        5000,
    ]  # the last entry is the vocabulary size
    assert not nb.build_model(config, 320).adaptive  # too small for any cluster: full softmax


def test_split_parameters_sets_the_sparse_embedding_apart(nb):
    config = nb.resolve_preset("smoke", torch.device("cpu"))  # sparse embedding, 32 wide
    dense, sparse = nb.split_parameters(nb.build_model(config, 5000))
    assert [p.shape for p in sparse] == [(5000, 32)] and all(p.shape != (5000, 32) for p in dense)
    dense, sparse = nb.split_parameters(nb.build_model(dict(config, sparse_embedding=False), 5000))
    assert sparse == [] and any(p.shape == (5000, 32) for p in dense)


@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_dropout_drops_whole_words_and_keeps_the_gradient_sparse(nb, sparse):
    embedding = torch.nn.Embedding(30, 4, sparse=sparse)
    ids = torch.tensor([[3, 5, 3, 7, 5, 3]])  # (batch=1, seq=6): word 3 three times
    torch.manual_seed(0)
    dropped = nb.embedding_dropout(embedding(ids), ids, 30, 0.5)  # (1, 6, 4)
    torch.manual_seed(0)
    keep = torch.empty(30).bernoulli_(0.5) * 2  # the same draw, one per word
    assert torch.allclose(dropped, embedding(ids) * keep[ids].unsqueeze(-1))
    fates = set()
    for word in (3, 5, 7):  # every occurrence shares the word's fate
        rows = dropped[0, ids[0] == word]
        assert (rows == 0).all() or torch.allclose(rows, embedding.weight[word] * 2)
        fates.add(bool((rows == 0).all()))
    assert fates == {True, False}  # seed 0 drops some words and keeps others
    dropped.sum().backward()
    assert embedding.weight.grad.is_sparse == sparse


def test_tied_adaptive_softmax_reads_its_input_vectors_from_the_decoder(nb):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(
        60, embedding_dim=16, hidden_dim=16, adaptive_cutoffs=[10, 30], tie_weights=True
    )
    untied = nb.LSTMLanguageModel(60, embedding_dim=16, hidden_dim=16, adaptive_cutoffs=[10, 30])
    assert (
        model.embedding is None
        and nb.count_parameters(model) == nb.count_parameters(untied) - 60 * 16
    )
    head, tail = model.decoder.head.weight, model.decoder.tail  # head: (10 + 2 clusters, 16)
    vectors = model.embed(torch.tensor([[4, 12, 45]]))  # (1, 3, 16)
    assert torch.equal(vectors[0, 0], head[4])  # a frequent word: its head row
    assert torch.allclose(
        vectors[0, 1], tail[0][1].weight[12 - 10] @ tail[0][0].weight
    )  # cluster 1, projected up
    assert torch.allclose(
        vectors[0, 2], tail[1][1].weight[45 - 30] @ tail[1][0].weight
    )  # cluster 2
    assert model.input_embeddings().shape == (60, 16)
    loss, _ = model.loss(
        torch.tensor([[4, 12, 45]]), torch.tensor([[1, 2, 3]])
    )  # targets all in the head
    loss.backward()
    assert tail[1][1].weight.grad[45 - 30].abs().sum() > 0  # reached only through the input side


def test_forget_bias_opens_only_the_forget_gate(nb):
    model = nb.LSTMLanguageModel(40, embedding_dim=8, hidden_dim=6, num_layers=2, forget_bias=1.0)
    for layer in (0, 1):
        i, f, g, o = getattr(model.lstm, f"bias_ih_l{layer}").detach().chunk(4)  # (6,) each
        assert (f == 1).all() and (i == 0).all() and (g == 0).all() and (o == 0).all()
        assert (getattr(model.lstm, f"bias_hh_l{layer}") == 0).all()


def test_plain_model_is_embedding_lstm_linear(nb):
    torch.manual_seed(0)
    model = nb.PlainLSTMLanguageModel(60, embedding_dim=8, hidden_dim=12, num_layers=2, dropout=0.0)
    parts = [type(m).__name__ for m in (model.embedding, model.lstm, model.decoder)]
    assert parts == ["Embedding", "LSTM", "Linear"] and not model.adaptive
    ids = torch.randint(0, 60, (2, 9))  # (batch, seq)
    logits, (h, c) = model(ids)
    assert logits.shape == (2, 9, 60) and h.shape == c.shape == (2, 2, 12)
    assert torch.allclose(model(ids, last_only=True)[0], logits[:, -1], atol=1e-6)
    expected = torch.nn.functional.cross_entropy(
        model(ids[:, :-1])[0].reshape(-1, 60), ids[:, 1:].reshape(-1)
    )
    assert torch.allclose(model.loss(ids[:, :-1], ids[:, 1:])[0], expected, atol=1e-5)
    w_hh = model.lstm.weight_hh_l0.detach()
    for gate in w_hh.chunk(4, 0):  # orthogonal per gate
        assert torch.allclose(gate @ gate.T, torch.eye(12), atol=1e-5)
    assert model.lstm.bias_ih_l1.abs().max() == 0 and model.decoder.bias.abs().max() == 0


def test_plain_training_lowers_the_loss(nb, tiny_vocab, tiny_corpus):
    torch.manual_seed(0)
    model = nb.PlainLSTMLanguageModel(len(tiny_vocab), embedding_dim=16, hidden_dim=16, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=nb.PLAIN_TRAINING["lr"])
    data = nb.batchify(tiny_vocab.encode(tiny_corpus["train"]), 4)
    before = nb.evaluate(model, data, 20)
    losses = []
    for _ in range(5):  # a few epochs of the tiny corpus
        losses += nb.train_plain(model, optimizer, data, 20, nb.PLAIN_TRAINING["clip"], seconds=60)
    assert len(losses) == 5 * nb.batches_per_epoch(data, {"bptt": 20})  # one epoch per call
    assert nb.evaluate(model, data, 20) < before - 0.5


def test_a_plain_model_checkpoint_loads_as_a_plain_model(nb, tiny_vocab, tmp_path):
    config = nb.resolve_preset("pytorch_examples", torch.device("cpu"))  # the plain architecture
    model = nb.build_model(config, len(tiny_vocab))
    assert type(model).__name__ == "PlainLSTMLanguageModel"
    nb.save_checkpoint(
        tmp_path / "best.pt", nb.checkpoint_payload(model, tiny_vocab, config, {"epoch": 1})
    )
    loaded, _, _ = nb.load_checkpoint(tmp_path / "best.pt")
    assert type(loaded).__name__ == "PlainLSTMLanguageModel"
    ids = torch.randint(0, len(tiny_vocab), (2, 5))
    assert torch.equal(loaded.eval()(ids)[0], model.eval()(ids)[0])
