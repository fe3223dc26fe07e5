"""The plain and the improved model: initialisation, shapes, probabilities, tying, dropouts."""

import pytest
import torch
import torch.nn as nn


def test_init_is_xavier_orthogonal_zero_gate_by_gate(nb):
    lstm = nn.LSTM(8, 16, 2)
    nb.init_lstm_weights(lstm, forget_bias=1.0)
    for gate in lstm.weight_hh_l1.detach().chunk(4):  # (16, 16) each
        assert torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-5)
    bound = (6 / (16 + 8)) ** 0.5  # Xavier-uniform for a (16, 8) block
    assert lstm.weight_ih_l0.abs().max() <= bound
    i, f, g, o = lstm.bias_ih_l0.detach().chunk(4)
    assert f.eq(1).all() and i.eq(0).all() and g.eq(0).all() and o.eq(0).all()
    assert lstm.bias_hh_l0.eq(0).all()


@pytest.mark.parametrize("cutoffs", [None, (20, 60)])
def test_log_probs_are_a_distribution_and_agree(nb, cutoffs):
    torch.manual_seed(0)
    models = [
        nb.PlainLSTMLanguageModel(100, 16, 16),
        nb.LSTMLanguageModel(100, 16, 16, adaptive_cutoffs=cutoffs),
    ]
    ids = torch.randint(0, 100, (3, 7))
    for model in models:
        model.eval()
        every_word, (h, c) = model.next_log_probs(ids[:, :-1])  # (3, 6, 100)
        assert every_word.shape == (3, 6, 100) and h.shape[1:] == (3, 16)
        assert torch.allclose(every_word.exp().sum(-1), torch.ones(3, 6), atol=1e-5)
        targets, _ = model.log_probs(ids[:, :-1], ids[:, 1:])  # (3, 6)
        assert torch.allclose(targets, every_word.gather(2, ids[:, 1:, None])[..., 0], atol=1e-5)


def test_adaptive_input_reads_the_decoder_and_learns_through_it(nb):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(100, 16, 16, adaptive_cutoffs=(20, 60)).eval()
    decoder, vectors = model.decoder, model.embed(torch.arange(100)).detach()  # (100, 16)
    assert torch.equal(vectors[:20], decoder.head.weight[:20])  # a frequent word: a row of the head
    projection, output = decoder.tail[0]  # cluster 1: words 20..59
    assert torch.allclose(vectors[25], output.weight[5] @ projection.weight)
    assert not hasattr(model, "embedding")  # no table of its own
    model.train()
    log_probs, _ = model.log_probs(torch.tensor([[25, 3]]), torch.tensor([[3, 4]]))
    (-log_probs.sum()).backward()
    assert output.weight.grad[5].abs().sum() > 0  # word 25 was read: its output row learned


def test_full_softmax_tying_shares_one_matrix_and_needs_matching_sizes(nb):
    model = nb.LSTMLanguageModel(50, 8, 16, proj_size=8, adaptive_cutoffs=None)
    assert model.decoder.weight is model.embedding.weight
    with pytest.raises(ValueError, match="Tying"):
        nb.LSTMLanguageModel(50, 8, 16, adaptive_cutoffs=None)


def test_variational_dropout_keeps_one_mask_over_time(nb):
    model = nb.LSTMLanguageModel(50, 8, 8, adaptive_cutoffs=None, dropout=0.5).train()
    dropped = model.locked_dropout(torch.ones(2, 30, 8))  # (batch, seq, features)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same at every step
    assert dropped.eq(0).any() and dropped.eq(2).any()  # kept ones are scaled by 1 / (1 - p)


def test_embedding_dropout_drops_whole_words(nb):
    torch.manual_seed(1)
    ids = torch.tensor([[3, 5, 3, 5, 3, 7] * 5])
    dropped = nb.drop_words(torch.ones(1, 30, 4), ids, 10, 0.5)  # (1, 30, 4)
    for word in (3, 5, 7):
        rows = dropped[0][ids[0] == word]
        assert (rows == rows[0]).all()  # every occurrence of a word: dropped or kept together
    assert {dropped[0][ids[0] == w][0, 0].item() for w in (3, 5, 7)} <= {0.0, 2.0}


def test_build_model_drops_cluster_boundaries_beyond_a_small_vocabulary(nb):
    config = nb.resolve_preset("cpu", dict(type="cpu", capability=None))
    assert nb.build_model(config, 5_000).config["adaptive_cutoffs"] == [1000]
    assert not nb.build_model(config, 500).adaptive
    assert nb.count_weights(config, 33_278) == 2_182_112  # the cpu preset at 2x256
