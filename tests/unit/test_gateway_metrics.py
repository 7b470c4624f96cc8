from prometheus_client import generate_latest

from service.metrics import Metrics


def test_observe_expressions_counts_faces_per_top_label() -> None:
    metrics = Metrics()
    metrics.observe_expressions(["happiness", "neutral", "happiness"])
    metrics.observe_expressions([])
    text = generate_latest(metrics.registry).decode()
    assert 'fer_expressions_total{label="happiness"} 2.0' in text
    assert 'fer_expressions_total{label="neutral"} 1.0' in text
