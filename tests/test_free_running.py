"""The free-running statistics: real text scores as real text, scrambled text does not."""
import math
import random

from experiments import free_running as fr

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and "
        "Juliet is the sun. Arise, fair sun, and kill the envious moon, who is already "
        "sick and pale with grief. 'Tis but thy name that is my enemy.\n")


def test_words_and_word_rate():
  assert fr.words("O'er the 'tis, DON'T!\nx1y") == ["o'er", 'the', 'tis', "don't", 'x', 'y']
  vocab = set(fr.words(TEXT))
  assert fr.word_rate(TEXT, vocab) == 1.0
  assert fr.word_rate('soft qzx light vvk', vocab) == 0.5
  assert math.isnan(fr.word_rate('!? 3', vocab))


def test_js_divergence_is_zero_for_equal_one_for_disjoint_and_symmetric():
  p = fr.ngram_counts(TEXT, 4)
  assert abs(fr.js_divergence(p, p)) < 1e-12
  assert abs(fr.js_divergence(fr.ngram_counts('aaaa', 2), fr.ngram_counts('bbbb', 2)) - 1) < 1e-12
  chars = list(TEXT)
  random.Random(0).shuffle(chars)
  q = fr.ngram_counts(''.join(chars), 4)
  assert abs(fr.js_divergence(p, q) - fr.js_divergence(q, p)) < 1e-12
  half = fr.ngram_counts(TEXT[:len(TEXT) // 2], 4)
  assert fr.js_divergence(p, half) < fr.js_divergence(p, q)        # real text is closer
  vocab = set(fr.words(TEXT))
  assert fr.score([''.join(chars)], vocab, p, 4)['word_rate'] < 0.5
