"""
The twistd plugin: C{twistd -n jspsych-tobii --port 8080}.  Only a
ServiceMaker here; the server is imported when the plugin is used.
"""

from twisted.application.service import ServiceMaker

jspsychTobii = ServiceMaker(
    "jspsych-tobii",
    "jspsych_tobii.tap",
    "WebSocket server connecting Tobii eye trackers to jsPsych experiments.",
    "jspsych-tobii",
)
