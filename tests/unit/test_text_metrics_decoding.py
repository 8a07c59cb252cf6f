"""Generation: text metrics against hand computation; beam search of width 1 is greedy decoding;
a wider beam never ends with a worse sequence score."""

import pytest
import torch

from mmfit.evaluation.metrics import bleu, edit_distance, generation_metrics, rouge_l
from mmfit.models.contract import EncoderOutput
from mmfit.models.heads import GenerationHead


def test_edit_distance_cer_and_wer():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    m = generation_metrics(["seven", "two"], ["seven", "too"])
    assert m["cer"] == pytest.approx(1 / 8)  # one substitution over 5 + 3 reference characters
    assert m["wer"] == pytest.approx(1 / 2)  # one word of two
    assert m["exact_match"] == 0.5
    m = generation_metrics(["the cat sat", ""], ["the cat sat down", "oops"])  # an empty reference: insertions
    assert m["wer"] == pytest.approx((1 + 1) / 3) and m["cer"] == pytest.approx((5 + 4) / 11)


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat was here") = "the cat" (2): P = 2/3, R = 2/4, F = 4/7
    assert rouge_l("the cat sat", "the cat was here") == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert rouge_l("a b c", "a b c") == 1.0 and rouge_l("x y", "a b") == 0.0
    assert rouge_l("The Cat, sat!", "the cat sat") == 1.0  # rouge-score's tokens: case and punctuation go


def test_bleu_is_sacrebleus_corpus_score():
    import math

    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["dog"], ["the cat"]) == pytest.approx(0.0)
    # 4 words against 4: n-gram precisions 3/4, 1/3, then 0 matches smoothed (exp: 1/2, 1/4 over
    # their counts 2 and 1); brevity penalty 1
    want = 100 * math.exp((math.log(3 / 4) + math.log(1 / 3) + math.log(0.5 / 2) + math.log(0.25 / 1)) / 4)
    assert bleu(["the cat ate fish"], ["the cat sat fish"]) == pytest.approx(want, rel=1e-6)
    m = generation_metrics(["a b c d"], ["a b c d"], full=True)
    assert m["bleu"] == pytest.approx(100.0) and m["bleu_signature"].startswith("sacrebleu")


def _head_and_inputs(seed=0):
    torch.manual_seed(seed)
    head = GenerationHead(16, 30, {"image": 8}, max_length=10, layers=1, heads=2, dropout=0.0).eval()
    fused = torch.randn(5, 16)
    outputs = {"image": EncoderOutput(torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.bool), torch.randn(5, 8))}
    present = {"image": torch.tensor([True, True, False, True, True])}
    return head, fused, outputs, present


def test_beam_of_width_one_is_greedy():
    head, fused, outputs, present = _head_and_inputs()
    mem, pad = head.memory(fused, outputs, present)
    with torch.no_grad():
        g = head.greedy(mem, pad, start=2, end=3, n=9)
        b = head.beam_search(mem, pad, start=2, end=3, n=9, beam=1)
    n = min(g.shape[1], b.shape[1])
    assert torch.equal(g[:, :n], b[:, :n])
    assert (g[:, n:] == 0).all() and (b[:, n:] == 0).all()


def _logprob(head, mem, pad, ids, start, end):
    """Sum of log-probabilities of a decoded sequence, up to and including its end token."""
    seq = torch.cat([torch.full((len(ids), 1), start), ids], 1)
    with torch.no_grad():
        lp = torch.log_softmax(head.logits(seq[:, :-1], mem, pad), -1)
    out = []
    for i in range(len(ids)):
        total = 0.0
        for t in range(ids.shape[1]):
            tok = int(ids[i, t])
            total += float(lp[i, t, tok])
            if tok == end:
                break
        out.append(total)
    return out


def test_wider_beam_finds_sequences_at_least_as_likely_at_full_length():
    head, fused, outputs, present = _head_and_inputs(seed=3)
    mem, pad = head.memory(fused, outputs, present)
    with torch.no_grad():
        g = head.greedy(mem, pad, start=2, end=31, n=6)  # an end token it never emits: full-length sequences
        b = head.beam_search(mem, pad, start=2, end=31, n=6, beam=4)
    for sg, sb in zip(_logprob(head, mem, pad, g, 2, 31), _logprob(head, mem, pad, b, 2, 31)):
        assert sb >= sg - 1e-5
