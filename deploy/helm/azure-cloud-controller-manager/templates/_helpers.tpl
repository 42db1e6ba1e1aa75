{{/* <imageRepository>/<imageName>:<imageTag> (imageTag defaults to the chart's appVersion). */}}
{{- define "acr.image" -}}
{{- $v := index . 0 -}}{{- $chart := index . 1 -}}
{{- $tag := $v.imageTag | default $chart.AppVersion -}}
{{- if $v.imageRepository -}}
{{ printf "%s/%s:%v" (trimSuffix "/" $v.imageRepository) $v.imageName $tag }}
{{- else -}}
{{ printf "%s:%v" $v.imageName $tag }}
{{- end -}}
{{- end -}}

{{/* An upstream flag from a value, only when the value is set (upstream's hasKey pattern); one args item
     indented for the containers of this chart. */}}
{{- define "acr.optFlag" -}}
{{- $values := index . 0 -}}{{- $key := index . 1 -}}{{- $flag := index . 2 -}}
{{- if hasKey $values $key }}
{{ printf "- %s" (printf "--%s=%v" $flag (index $values $key) | quote) | indent 12 }}
{{- end -}}
{{- end -}}
