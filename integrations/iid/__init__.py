"""IHE Invoke Image Display (RAD-106): ``/IHEInvokeImageDisplay`` opens the viewer on a study or a patient's studies."""
