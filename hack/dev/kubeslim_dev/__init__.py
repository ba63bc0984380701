"""Development helpers shared by tests/, hack/demo/ and bench/ (never by the product packages):

  digits     real data (scikit-learn's digits) and small Paddle models trained on it
  demo       seeding S3 with the demo's model and data, the example manifest
  devenv     the local devenv's kubeconfig guard, S3 settings and client
  manifests  editing QuantizationJob manifests
"""
