"""Stage 5, the report: STL vs MTL evaluation tables, plots and the rendered report."""
