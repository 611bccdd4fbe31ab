"""The click-following diagnostic on scripted predictors with known behaviour."""
import pytest
import torch

from engine.click_response import displaced_click_response, follow_ratio

K = 12


def _truth(batch=3):
    return torch.stack([torch.arange(K).float() * 10 + 5, torch.full((K,), 20.0)], -1).expand(batch, K, 2).clone()


def _predictor(true_rc, share_clicked, share_neighbours):
    """Moves the clicked point by ``share_clicked`` of the click's offset from the truth, its two nearest
    neighbours on each side by ``share_neighbours`` of it, and nothing else."""
    def predict(click_rc, clicked):
        out = true_rc.clone()
        for b in range(true_rc.shape[0]):
            for k in torch.nonzero(clicked[b]).flatten().tolist():
                offset = click_rc[b, k] - true_rc[b, k]
                out[b, k] += share_clicked * offset
                for j in (k - 2, k - 1, k + 1, k + 2):
                    if 0 <= j < K:
                        out[b, j] += share_neighbours * offset
        return out
    return predict


@pytest.mark.parametrize("clicked, neighbours", [(1.0, 0.5), (0.0, 0.0), (0.3, -0.2)])
def test_response_recovers_the_scripted_shares(clicked, neighbours):
    truth = _truth()
    r = displaced_click_response(_predictor(truth, clicked, neighbours), truth, 6, (8.0, 0.0), neighbours=2)
    assert r["clicked"] == pytest.approx(clicked) and r["neighbours"] == pytest.approx(neighbours)
    assert r["others"] == pytest.approx(0.0)


def test_follow_ratio_counts_only_movement_along_the_shift():
    before = torch.zeros(1, 2, 2)
    after = torch.tensor([[[3.0, 5.0], [-6.0, 0.0]]])  # sideways movement does not count
    torch.testing.assert_close(follow_ratio(before, after, torch.tensor([[6.0, 0.0]])), torch.tensor([[0.5, -1.0]]))
