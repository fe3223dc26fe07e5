"""Section 9: what the model remembers, the continuous cache and dynamic evaluation."""

import math

import torch

from conftest import TINY_CORPUS


def stream(nb, tiny_vocab, split="valid"):
    return torch.tensor(tiny_vocab.encode(nb.load_corpus(TINY_CORPUS, custom=True)[split]))


def test_the_cache_with_lambda_zero_is_the_model_exactly(nb, trained_tiny, tiny_vocab):
    log_probs, states, next_ids = nb.read_stream(trained_tiny, stream(nb, tiny_vocab))
    p_cache = nb.cache_probs(states, next_ids, theta=1.0, window=50)
    assert torch.equal(nb.mix(log_probs, p_cache, 0.0), log_probs)
    assert 0 < p_cache.max() <= 1 and p_cache[0] == 0  # the first word has nothing to point back at


def test_reading_one_stream_scores_as_the_model_does(nb, trained_tiny, tiny_vocab):
    ids = stream(nb, tiny_vocab)
    whole, _ = trained_tiny.eval().log_probs(ids[None, :-1], ids[None, 1:])  # (1, T - 1)
    for segment in (7, 140):
        log_probs, _, next_ids = nb.read_stream(trained_tiny, ids, segment=segment)
        assert torch.allclose(log_probs, whole[0], atol=1e-5) and torch.equal(next_ids, ids[1:])
    step_zero, _, _ = nb.read_stream(trained_tiny, ids, lr=0.0, segment=7)  # dynamic, step 0
    assert torch.allclose(step_zero, whole[0], atol=1e-5)


def test_every_token_is_scored_before_the_model_learns_from_it(nb, trained_tiny, tiny_vocab):
    ids = stream(nb, tiny_vocab)
    static, _, _ = nb.read_stream(trained_tiny, ids, segment=10)
    dynamic, _, _ = nb.read_stream(trained_tiny, ids, lr=1.0, segment=10)
    # the first segment is scored before any step: a step taken first would have changed it
    assert torch.allclose(dynamic[:10], static[:10], atol=1e-6)
    assert not torch.allclose(dynamic[10:20], static[10:20], atol=1e-3)  # then it learns
    before = [p.detach().clone() for p in trained_tiny.parameters()]
    nb.read_stream(trained_tiny, ids, lr=1.0, segment=10)
    assert all(torch.equal(a, b) for a, b in zip(before, trained_tiny.parameters()))


def test_the_cache_raises_a_rare_phrase_the_second_time(nb, trained_tiny, tiny_vocab):
    rare = [len(tiny_vocab) - 3, len(tiny_vocab) - 4]  # two of the rarest words, as a phrase
    text = stream(nb, tiny_vocab)
    ids = torch.cat([text[:60], torch.tensor(rare), text[60:100], torch.tensor(rare)])
    log_probs, states, next_ids = nb.read_stream(trained_tiny, ids)
    p_cache = nb.cache_probs(states, next_ids, 1.0, 200)
    mixed = nb.mix(log_probs, p_cache, 0.3)
    first, second = 60, len(ids) - 2  # the positions whose next word is the phrase's second word
    assert next_ids[first] == next_ids[second] == rare[1]
    assert p_cache[first] == 0 and mixed[first] < log_probs[first]  # never seen: no help
    assert p_cache[second] > 0 and mixed[second] > log_probs[second]  # seen once: more likely


def test_the_lstm_by_hand_is_the_lstm(nb, trained_tiny, tiny_vocab):
    ids = stream(nb, tiny_vocab)[:50]
    mean_gates, cells, distance = nb.lstm_internals(trained_tiny, ids)
    assert distance < 1e-5  # the top layer's h_t by hand is nn.LSTM's
    layers, hidden = trained_tiny.lstm.num_layers, trained_tiny.lstm.hidden_size
    assert mean_gates.shape == (2, layers, hidden) and cells.shape == (layers, 50, hidden)
    assert 0 < mean_gates.min() and mean_gates.max() < 1
    # the last cell of every layer is the c_n that nn.LSTM returns
    _, (_, c_n) = trained_tiny.lstm(trained_tiny.embed(ids[None]))
    assert torch.allclose(cells[:, -1], c_n[:, 0], atol=1e-5)


def test_the_lstm_by_hand_with_a_projection(nb, tiny_vocab):
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(len(tiny_vocab), 8, 12, proj_size=8, adaptive_cutoffs=None)
    ids = torch.randint(0, len(tiny_vocab), (30,))
    mean_gates, cells, distance = nb.lstm_internals(model, ids)
    assert distance < 1e-5 and cells.shape == (2, 30, 12)
    _, (_, c_n) = model.eval().lstm(model.embed(ids[None]))
    assert torch.allclose(cells[:, -1], c_n[:, 0], atol=1e-5)


def test_one_window_is_no_reset(nb, trained_tiny, tiny_vocab):
    ids = stream(nb, tiny_vocab)
    whole = math.exp(nb.evaluate(trained_tiny, nb.batchify(ids, 1), bptt=len(ids)))
    assert math.isclose(nb.reset_every(trained_tiny, ids, len(ids) - 1), whole, rel_tol=1e-5)
    assert nb.reset_every(trained_tiny, ids, 1) > whole  # one word of context is worse


def test_text_features(nb):
    tokens = 'a ( b ) " c " d . e <eos> = = T = = <eos> x'.split()
    features = nb.text_features(tokens)
    assert features["parentheses"].tolist()[:5] == [0, 1, 1, 0, 0]
    assert features["quotes"].tolist()[3:8] == [0, 1, 1, 0, 0]
    assert features["position in sentence"].tolist()[7:11] == [8, 0, 1, 0]
    assert features["heading"].tolist()[11:] == [1, 1, 1, 1, 1, 1, 0]


def test_tune_cache_chooses_on_validation(nb, trained_tiny, tiny_vocab):
    val = nb.read_stream(trained_tiny, stream(nb, tiny_vocab, "valid"))
    test = nb.read_stream(trained_tiny, stream(nb, tiny_vocab, "test"))
    best = nb.tune_cache(val, test, thetas=(0.5, 1.0), windows=(50,))
    assert best["val_ppl"] <= nb.perplexity(val[0]) and best["theta"] in (0.5, 1.0)
    p_cache = nb.cache_probs(*test[1:], best["theta"], best["window"])
    assert best["test_ppl"] == nb.perplexity(nb.mix(test[0], p_cache, best["lambda"]))


def test_tune_cache_reports_no_cache_when_it_never_helps(nb):
    torch.manual_seed(0)
    text = [torch.randn(30).clamp(max=0), torch.randn(30, 4), torch.arange(30)]  # no word repeats
    best = nb.tune_cache(text, text, thetas=(0.5, 1.0), windows=(5, 10))  # p_cache is 0 everywhere
    assert best["lambda"] == 0 and best["theta"] is None and best["window"] is None
    assert best["val_ppl"] == best["test_ppl"] == nb.perplexity(text[0])  # the model alone


def test_cache_probs_of_half_precision_states(nb):
    torch.manual_seed(0)
    states, next_ids = torch.randn(40, 6).half(), torch.randint(0, 5, (40,))  # as read_stream keeps
    half = nb.cache_probs(states, next_ids, theta=0.5, window=8, chunk=7)
    assert half.dtype == torch.float
    assert torch.allclose(half, nb.cache_probs(states.float(), next_ids, 0.5, 8, chunk=7))


def test_dynamic_evaluation_of_the_gpu_architecture(nb, tiny_vocab):
    """A projected LSTM with a tied full softmax, as the gpu preset builds: the same guarantees."""
    torch.manual_seed(0)
    model = nb.LSTMLanguageModel(len(tiny_vocab), 8, 12, proj_size=8, adaptive_cutoffs=None)
    ids = torch.randint(0, len(tiny_vocab), (60,))
    before = [p.detach().clone() for p in model.parameters()]
    static, _, _ = nb.read_stream(model, ids, segment=10)
    dynamic, states, _ = nb.read_stream(model, ids, lr=0.5, segment=10)
    assert torch.allclose(dynamic[:10], static[:10], atol=1e-6) and states.shape == (59, 8)
    assert not torch.allclose(dynamic[10:], static[10:], atol=1e-4)  # it learned
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_no_score_depends_on_a_later_token(nb, trained_tiny, tiny_vocab):
    """Dynamic evaluation: change one token, and every score before it stays exactly the same."""
    ids = stream(nb, tiny_vocab)
    before, _, _ = nb.read_stream(trained_tiny, ids, lr=0.5, segment=10)
    for position in (5, 37, 80):
        changed = ids.clone()
        changed[position] = (changed[position] + 1) % len(tiny_vocab)
        after, _, _ = nb.read_stream(trained_tiny, changed, lr=0.5, segment=10)
        # log_probs[t] scores ids[t + 1]: those before the change must not have seen it
        assert torch.equal(after[: position - 1], before[: position - 1])
        assert not torch.equal(after[position - 1 :], before[position - 1 :])


def test_cache_probs_is_the_formula(nb):
    torch.manual_seed(0)
    states, next_ids = torch.randn(40, 6), torch.randint(0, 5, (40,))
    for window in (1, 3, 100):
        expected = torch.zeros(40)
        for t in range(40):
            keys = range(max(0, t - window), t)  # the W states before t
            weights = torch.tensor([0.5 * float(states[t] @ states[i]) for i in keys]).softmax(0)
            expected[t] = sum(w for w, i in zip(weights, keys) if next_ids[i] == next_ids[t])
        got = nb.cache_probs(states, next_ids, theta=0.5, window=window, chunk=7)
        assert torch.allclose(got, expected, atol=1e-6)


def test_the_pull_goes_back_to_the_trained_weights(nb, trained_tiny, tiny_vocab):
    ids = stream(nb, tiny_vocab)
    static, _, _ = nb.read_stream(trained_tiny, ids, segment=10)
    pulled_home, _, _ = nb.read_stream(trained_tiny, ids, lr=1.0, segment=10, pull=1.0)
    assert torch.allclose(pulled_home, static, atol=1e-6)  # each step undone: the static model


def test_reset_every_is_a_loop_over_windows(nb, trained_tiny, tiny_vocab):
    text = stream(nb, tiny_vocab)
    ids = text.repeat(1100 // len(text) + 1)[:1100]  # several batches of windows for k = 7
    k, n = 7, (len(ids) - 1) // 7 * 7  # the tokens after the last whole window are left out
    total = 0.0
    for start in range(0, n, k):
        window = ids[start : start + k + 1][None]  # (1, k + 1), from a zero state
        total -= trained_tiny.eval().log_probs(window[:, :-1], window[:, 1:])[0].sum().item()
    assert math.isclose(nb.reset_every(trained_tiny, ids, k), math.exp(total / n), rel_tol=1e-5)


def test_mix_is_the_weighted_sum_of_probabilities(nb):
    log_probs, p_cache = torch.tensor([-1.0, -5.0, -0.1]), torch.tensor([0.0, 0.5, 1.0])
    expected = 0.7 * log_probs.exp() + 0.3 * p_cache
    assert torch.allclose(nb.mix(log_probs, p_cache, 0.3).exp(), expected)


def test_tune_cache_never_looks_at_the_test_text(nb, trained_tiny, tiny_vocab):
    val = nb.read_stream(trained_tiny, stream(nb, tiny_vocab, "valid"))
    chosen = []
    for split in ("test", "train"):  # two different "test" texts: the same settings
        best = nb.tune_cache(val, nb.read_stream(trained_tiny, stream(nb, tiny_vocab, split)))
        chosen.append((best["theta"], best["lambda"], best["window"]))
    assert chosen[0] == chosen[1]
