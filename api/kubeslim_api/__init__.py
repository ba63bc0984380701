"""kubeslim's API: what the operator and the job image agree on, and nothing with I/O.

  spec       the typed QuantizationJob spec (kubeslim.io/v1alpha1)
  contract   the job → operator result message, exit codes, stage names, the pod's paths
  reasons    the reason codes of status, conditions, events and stage results
  progress   the job → operator progress line (printed by the pod, read by the operator from its log)
  camel      the pydantic base of all of the above (camelCase on the wire)
  text       bounding foreign text quoted in a message (truncate)

Both `kubeslim_operator` and `kubeslim_job` import this package; neither imports the other.
"""
