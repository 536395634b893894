"""Diagnostics: what runs inside a trial to show what its model does (attention numbers
against planted keys, faithfulness by occlusion, the panel's heatmaps and the confusion
matrix, drawn by the artifact spool). Figures are returned, never logged."""
