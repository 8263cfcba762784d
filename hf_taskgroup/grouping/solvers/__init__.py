"""Exact partition solvers: enumerated set partitioning, interval DP and the compact MILP for large N."""
