"""{% prediction_detections p as found %}: a stored prediction's detections (webapp.inference.detections) for the
gallery's box overlay: {"size": [w, h], "detections": [{"box", "label", "confidence"}]}."""

from django import template

from webapp.inference.detections import stored_detections

register = template.Library()


@register.simple_tag
def prediction_detections(prediction) -> dict:
    found = stored_detections(prediction)
    for detection in found["detections"]:  # SVG wants x, y, width, height
        x0, y0, x1, y1 = detection["box"]
        detection["rect"] = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
    return found
