package chart

import "sigs.k8s.io/yaml"

func yamlUnmarshal(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) }
