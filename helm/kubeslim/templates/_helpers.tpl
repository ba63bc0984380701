{{- define "kubeslim.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubeslim.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubeslim.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubeslim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeslim.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* repository:tag, or repository@digest when image.digest pins the content (the tag is then only
a label: what runs is the digest). */ -}}
{{- define "kubeslim.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- /* The names of job.imagePullSecrets as a JSON list: the Job's imagePullSecrets and the only ones the
admission policy admits. */ -}}
{{- define "kubeslim.jobPullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.job.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The job pods' proxy variables, {"HTTPS_PROXY": …}, only those set in job.proxy: the operator
     passes exactly these (KUBESLIM_JOB_<name>) and the admission policy admits exactly these. */}}
{{- define "kubeslim.jobProxyEnv" -}}
{{- $proxy := .Values.job.proxy | default dict -}}
{{- $env := dict -}}
{{- range $variable, $key := dict "HTTPS_PROXY" "httpsProxy" "HTTP_PROXY" "httpProxy" "NO_PROXY" "noProxy" -}}
{{- with get $proxy $key }}{{ $_ := set $env $variable . }}{{ end -}}
{{- end -}}
{{- toJson $env -}}
{{- end -}}
