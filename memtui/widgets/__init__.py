"""The console's widgets: items table, histograms, image preview, GPU line, log pane."""
