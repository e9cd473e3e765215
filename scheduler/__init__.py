"""The scheduler: single writer of run state; walks each run's DAG."""
