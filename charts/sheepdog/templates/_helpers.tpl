{{/* Chart name (63 characters at most: a DNS label). */}}
{{- define "sheepdog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "sheepdog.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sheepdog.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sheepdog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sheepdog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sheepdog.labels" -}}
helm.sh/chart: {{ include "sheepdog.chart" . }}
{{ include "sheepdog.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sheepdog
{{- end -}}

{{- define "sheepdog.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sheepdog.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; tag defaults to the chart's appVersion. Call with
     (dict "image" .Values.image "root" $). */}}
{{- define "sheepdog.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sheepdog.operatorImage" -}}
{{- include "sheepdog.image" (dict "image" .Values.image "root" .) -}}
{{- end -}}

{{- define "sheepdog.workerImage" -}}
{{- include "sheepdog.image" (dict "image" .Values.worker.image "root" .) -}}
{{- end -}}

{{/* Cluster-wide mode: no watchNamespaces. */}}
{{- define "sheepdog.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* The Prometheus `job` label of the operator's scrape target: the metrics Service's name
     (what a ServiceMonitor produces), used by the OperatorDown alert and the dashboard. */}}
{{- define "sheepdog.metricsJob" -}}
{{- printf "%s-metrics" (include "sheepdog.fullname" .) -}}
{{- end -}}

{{/* A Prometheus duration of one unit ("90s", "30m", "6h", "2d") in seconds. */}}
{{- define "sheepdog.durationSeconds" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^[0-9]+[smhd]$" $d) -}}
{{- fail (printf "%q is not a duration like 30m, 6h or 2d" $d) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $d | int -}}
{{- $unit := regexFind "[smhd]$" $d -}}
{{- $mult := get (dict "s" 1 "m" 60 "h" 3600 "d" 86400) $unit -}}
{{- mul $n $mult -}}
{{- end -}}

{{/* Defaults of the stage Jobs, as the JSON mapping sheepdog.kube.jobs.ImageDefaults.coerce
     reads (image, pullPolicy, pullSecrets, gpuNodeSelector, gpuTolerations, queueName,
     gpuResourceName, resourcesPerGpu, shmSize). */}}
{{- define "sheepdog.workerDefaults" -}}
{{- $d := dict "image" (include "sheepdog.workerImage" .) -}}
{{- with .Values.worker.image.pullPolicy }}{{ $_ := set $d "pullPolicy" . }}{{ end -}}
{{- $secrets := list -}}
{{- range .Values.worker.imagePullSecrets }}{{ $secrets = append $secrets .name }}{{ end -}}
{{- with $secrets }}{{ $_ := set $d "pullSecrets" . }}{{ end -}}
{{- with .Values.worker.gpuNodeSelector }}{{ $_ := set $d "gpuNodeSelector" . }}{{ end -}}
{{- with .Values.worker.gpuTolerations }}{{ $_ := set $d "gpuTolerations" . }}{{ end -}}
{{- with .Values.worker.queueName }}{{ $_ := set $d "queueName" . }}{{ end -}}
{{- with .Values.worker.gpuResourceName }}{{ $_ := set $d "gpuResourceName" . }}{{ end -}}
{{- with .Values.worker.resourcesPerGpu }}{{ $_ := set $d "resourcesPerGpu" . }}{{ end -}}
{{- with .Values.worker.shmSize }}{{ $_ := set $d "shmSize" . }}{{ end -}}
{{- if .Values.networkPolicy.enabled }}{{ $_ := set $d "networkPolicy" true }}{{ end -}}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.stageEgressCIDRs }}{{ $_ := set $d "egressCIDRs" .Values.networkPolicy.stageEgressCIDRs }}{{ end -}}
{{- toJson $d -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret the operator serves /metrics with (metrics.secure). */}}
{{- define "sheepdog.metricsTLSSecret" -}}
{{- default (printf "%s-metrics-tls" (include "sheepdog.fullname" .)) .Values.metrics.tls.secretName -}}
{{- end -}}

{{/* The DNS names of the metrics Service, the serving certificate's names. */}}
{{- define "sheepdog.metricsDNSNames" -}}
{{- $svc := include "sheepdog.metricsJob" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}
